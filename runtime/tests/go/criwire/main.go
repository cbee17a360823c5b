// criwire drives a CRI server the way crictl does: grpc-go over a unix socket with
// the upstream runtime.v1 API (stubs generated from the k8s-cri crate's api.proto by
// the test). It runs one pod and container through the calls crictl's commands make
// and prints what it saw as JSON for the Rust test to check.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	pb "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func must(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}

func keys(m map[string]string) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: criwire SOCKET IMAGE LOGDIR localhost|socket-path")
		os.Exit(2)
	}
	sock, image, logDir := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}
	opts := []grpc.DialOption{grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dial),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20))}
	// crictl and the kubelet send ":authority: localhost" since Kubernetes 1.26
	// (kubernetes#112597); before, grpc-go sent the socket path itself.
	if os.Args[4] == "localhost" {
		opts = append(opts, grpc.WithAuthority("localhost"))
	}
	conn, err := grpc.DialContext(ctx, sock, opts...)
	must("dial", err)
	defer conn.Close()
	rt := pb.NewRuntimeServiceClient(conn)
	im := pb.NewImageServiceClient(conn)
	out := map[string]interface{}{}

	// crictl events: a server stream, read while the rest goes on.
	evs, err := rt.GetContainerEvents(ctx, &pb.GetEventsRequest{})
	must("GetContainerEvents", err)
	var mu sync.Mutex
	events := map[string][]string{}
	go func() {
		for {
			e, err := evs.Recv()
			if err != nil {
				return
			}
			mu.Lock()
			events[e.ContainerId] = append(events[e.ContainerId], e.ContainerEventType.String())
			mu.Unlock()
		}
	}()
	eventsOf := func(id string) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string{}, events[id]...)
	}
	// Wait until id's events end with want (or give up after 10 s).
	waitEvent := func(id, want string) {
		for i := 0; i < 100; i++ {
			e := eventsOf(id)
			if len(e) > 0 && e[len(e)-1] == want {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	v, err := rt.Version(ctx, &pb.VersionRequest{Version: "v1"})
	must("Version", err)
	out["runtimeApiVersion"] = v.RuntimeApiVersion
	out["runtimeName"] = v.RuntimeName
	st, err := rt.Status(ctx, &pb.StatusRequest{Verbose: true})
	must("Status", err)
	conds := map[string]bool{}
	for _, c := range st.Status.Conditions {
		conds[c.Type] = c.Status
	}
	out["conditions"] = conds

	imgs, err := im.ListImages(ctx, &pb.ListImagesRequest{})
	must("ListImages", err)
	tags := []string{}
	for _, i := range imgs.Images {
		tags = append(tags, i.RepoTags...)
	}
	out["images"] = tags
	is, err := im.ImageStatus(ctx, &pb.ImageStatusRequest{Image: &pb.ImageSpec{Image: image}, Verbose: true})
	must("ImageStatus", err)
	out["imageFound"] = is.Image != nil
	missing, err := im.ImageStatus(ctx, &pb.ImageStatusRequest{Image: &pb.ImageSpec{Image: "docker.io/library/absent:1"}})
	must("ImageStatus of an absent image", err)
	out["absentImageIsNil"] = missing.Image == nil
	fs, err := im.ImageFsInfo(ctx, &pb.ImageFsInfoRequest{})
	must("ImageFsInfo", err)
	out["imageFilesystems"] = len(fs.ImageFilesystems)

	podCfg := &pb.PodSandboxConfig{
		Metadata:     &pb.PodSandboxMetadata{Name: "gowire", Namespace: "default", Uid: "gowire-uid"},
		Hostname:     "gowire",
		LogDirectory: logDir,
		Labels:       map[string]string{"app": "gowire"},
		Annotations:  map[string]string{"note": "from grpc-go"},
	}
	pod, err := rt.RunPodSandbox(ctx, &pb.RunPodSandboxRequest{Config: podCfg})
	must("RunPodSandbox", err)
	ps, err := rt.PodSandboxStatus(ctx, &pb.PodSandboxStatusRequest{PodSandboxId: pod.PodSandboxId, Verbose: true})
	must("PodSandboxStatus", err)
	out["podState"] = ps.Status.State.String()
	out["podAnnotation"] = ps.Status.Annotations["note"]
	pods, err := rt.ListPodSandbox(ctx, &pb.ListPodSandboxRequest{Filter: &pb.PodSandboxFilter{LabelSelector: map[string]string{"app": "gowire"}}})
	must("ListPodSandbox", err)
	out["podsListed"] = len(pods.Items)

	ctrCfg := &pb.ContainerConfig{
		Metadata: &pb.ContainerMetadata{Name: "c"},
		Image:    &pb.ImageSpec{Image: image},
		Command:  []string{"sh", "-c", "echo hello-from-go; exec sleep 100"},
		LogPath:  "c.log",
		Labels:   map[string]string{"role": "wire"},
	}
	c, err := rt.CreateContainer(ctx, &pb.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: ctrCfg, SandboxConfig: podCfg})
	must("CreateContainer", err)
	_, err = rt.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: c.ContainerId})
	must("StartContainer", err)
	list, err := rt.ListContainers(ctx, &pb.ListContainersRequest{Filter: &pb.ContainerFilter{
		PodSandboxId:  pod.PodSandboxId,
		LabelSelector: map[string]string{"role": "wire"},
		State:         &pb.ContainerStateValue{State: pb.ContainerState_CONTAINER_RUNNING},
	}})
	must("ListContainers", err)
	out["containersListed"] = len(list.Containers)
	cs, err := rt.ContainerStatus(ctx, &pb.ContainerStatusRequest{ContainerId: c.ContainerId, Verbose: true})
	must("ContainerStatus", err)
	out["containerState"] = cs.Status.State.String()
	out["containerInfo"] = keys(cs.Info)

	ex, err := rt.ExecSync(ctx, &pb.ExecSyncRequest{ContainerId: c.ContainerId, Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, Timeout: 10})
	must("ExecSync", err)
	out["execSync"] = map[string]interface{}{"stdout": string(ex.Stdout), "stderr": string(ex.Stderr), "exitCode": ex.ExitCode}
	e, err := rt.Exec(ctx, &pb.ExecRequest{ContainerId: c.ContainerId, Cmd: []string{"true"}, Stdout: true, Stderr: true})
	must("Exec", err)
	out["execUrl"] = e.Url

	_, err = rt.UpdateContainerResources(ctx, &pb.UpdateContainerResourcesRequest{ContainerId: c.ContainerId, Linux: &pb.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}})
	must("UpdateContainerResources", err)
	_, err = rt.ReopenContainerLog(ctx, &pb.ReopenContainerLogRequest{ContainerId: c.ContainerId})
	must("ReopenContainerLog", err)
	cst, err := rt.ContainerStats(ctx, &pb.ContainerStatsRequest{ContainerId: c.ContainerId})
	must("ContainerStats", err)
	out["statsFor"] = cst.Stats.Attributes.Id == c.ContainerId
	all, err := rt.ListContainerStats(ctx, &pb.ListContainerStatsRequest{})
	must("ListContainerStats", err)
	out["statsListed"] = len(all.Stats)
	pst, err := rt.ListPodSandboxStats(ctx, &pb.ListPodSandboxStatsRequest{})
	must("ListPodSandboxStats", err)
	out["podStatsListed"] = len(pst.Stats)

	// A container that ends on its own is reported stopped too.
	quickCfg := &pb.ContainerConfig{
		Metadata: &pb.ContainerMetadata{Name: "quick"},
		Image:    &pb.ImageSpec{Image: image},
		Command:  []string{"true"},
		LogPath:  "quick.log",
	}
	q, err := rt.CreateContainer(ctx, &pb.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: quickCfg, SandboxConfig: podCfg})
	must("CreateContainer quick", err)
	_, err = rt.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: q.ContainerId})
	must("StartContainer quick", err)
	waitEvent(q.ContainerId, "CONTAINER_STOPPED_EVENT")
	out["quickEvents"] = eventsOf(q.ContainerId)
	_, err = rt.RemoveContainer(ctx, &pb.RemoveContainerRequest{ContainerId: q.ContainerId})
	must("RemoveContainer quick", err)

	_, err = rt.StopContainer(ctx, &pb.StopContainerRequest{ContainerId: c.ContainerId, Timeout: 5})
	must("StopContainer", err)
	cs, err = rt.ContainerStatus(ctx, &pb.ContainerStatusRequest{ContainerId: c.ContainerId})
	must("ContainerStatus after stop", err)
	out["stoppedState"] = cs.Status.State.String()
	_, err = rt.RemoveContainer(ctx, &pb.RemoveContainerRequest{ContainerId: c.ContainerId})
	must("RemoveContainer", err)
	_, err = rt.ContainerStatus(ctx, &pb.ContainerStatusRequest{ContainerId: c.ContainerId})
	out["removedContainerCode"] = status.Code(err).String()
	_, err = rt.StopPodSandbox(ctx, &pb.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	must("StopPodSandbox", err)
	_, err = rt.RemovePodSandbox(ctx, &pb.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	must("RemovePodSandbox", err)
	pods, err = rt.ListPodSandbox(ctx, &pb.ListPodSandboxRequest{})
	must("ListPodSandbox after removal", err)
	out["podsLeft"] = len(pods.Items)
	waitEvent(pod.PodSandboxId, "CONTAINER_DELETED_EVENT")
	out["containerEvents"] = eventsOf(c.ContainerId)
	out["podEvents"] = eventsOf(pod.PodSandboxId)

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	must("encode", enc.Encode(out))
}
