//! The CRI container log format, as the kubelet reads it:
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <content>\n`, one line per output line;
//! a line longer than the buffer is split into `P` (partial) records ending with an `F`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest record content before a line is split into partial records.
pub const MAX_LINE: usize = 16 * 1024;

pub fn timestamp() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Appends output of a container's streams to its log file.
pub struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of an unfinished line per stream (0 = stdout, 1 = stderr).
    pending: [Vec<u8>; 2],
}

fn open(path: &Path) -> Option<File> {
    if path.as_os_str().is_empty() {
        return None;
    }
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    OpenOptions::new().create(true).append(true).open(path).ok()
}

impl Writer {
    /// A writer for `path`; an empty path discards output (no log_path given).
    pub fn new(path: &Path) -> Writer {
        Writer {
            path: path.to_path_buf(),
            file: open(path),
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Reopen the file (after log rotation renamed it).
    pub fn reopen(&mut self) {
        self.file = open(&self.path);
    }

    fn record(&mut self, stream: usize, partial: bool, content: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        let name = if stream == 0 { "stdout" } else { "stderr" };
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(format!("{} {name} {tag} ", timestamp()).as_bytes());
        line.extend_from_slice(content);
        line.push(b'\n');
        // One write per record keeps records whole for concurrent readers.
        let _ = f.write_all(&line);
    }

    /// Add output of `stream` (0 stdout, 1 stderr); complete lines are written at once.
    pub fn write(&mut self, stream: usize, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.pending[stream]);
                    line.extend_from_slice(&data[..i]);
                    self.emit(stream, line);
                    data = &data[i + 1..];
                }
                None => {
                    self.pending[stream].extend_from_slice(data);
                    data = &[];
                    while self.pending[stream].len() >= MAX_LINE {
                        let rest = self.pending[stream].split_off(MAX_LINE);
                        let chunk = std::mem::replace(&mut self.pending[stream], rest);
                        self.record(stream, true, &chunk);
                    }
                }
            }
        }
    }

    /// A complete line: split into partial records if it is too long, the last one full.
    fn emit(&mut self, stream: usize, line: Vec<u8>) {
        let chunks: Vec<&[u8]> = line.chunks(MAX_LINE).collect();
        if chunks.is_empty() {
            self.record(stream, false, b"");
        }
        for (i, c) in chunks.iter().enumerate() {
            self.record(stream, i + 1 < chunks.len(), c);
        }
    }

    /// Write out unfinished lines (the stream ended without a newline).
    pub fn flush(&mut self) {
        for s in 0..2 {
            if !self.pending[s].is_empty() {
                let line = std::mem::take(&mut self.pending[s]);
                self.emit(s, line);
            }
        }
    }
}

/// One parsed log record.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a str,
}

pub fn parse(line: &str) -> Option<Record<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let content = it.next().unwrap_or("");
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial: tag == "P",
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn lines_streams_and_partials() {
        let dir = std::env::temp_dir().join(format!("skiff-crilog-{}", std::process::id()));
        let p = dir.join("c.log");
        let mut w = Writer::new(&p);
        w.write(0, b"hello\nwor");
        w.write(1, b"oops\n");
        w.write(0, b"ld\n\n");
        let big = vec![b'x'; MAX_LINE + 10];
        w.write(0, &big);
        w.write(0, b"\n");
        w.write(1, b"tail");
        w.flush();
        let lines = read(&p);
        let recs: Vec<Record> = lines.iter().map(|l| parse(l).unwrap()).collect();
        let got: Vec<(&str, bool, usize)> = recs
            .iter()
            .map(|r| (r.stream, r.partial, r.content.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("stdout", false, 5),
                ("stderr", false, 4),
                ("stdout", false, 5),
                ("stdout", false, 0),
                ("stdout", true, MAX_LINE),
                ("stdout", false, 10),
                ("stderr", false, 4),
            ]
        );
        assert_eq!(recs[2].content, "world");
        assert!(
            humantime::parse_rfc3339(recs[0].time).is_ok(),
            "{}",
            recs[0].time
        );
        // Rotation: the file is renamed, reopen starts a new one.
        std::fs::rename(&p, dir.join("c.log.1")).unwrap();
        w.reopen();
        w.write(0, b"after\n");
        assert_eq!(read(&p).len(), 1);
        assert!(parse("garbage").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
