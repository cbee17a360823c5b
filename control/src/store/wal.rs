//! The write-ahead log: length- and CRC-framed records, appended and fsync'd before a
//! write is acknowledged. Recovery replays records up to the first torn or corrupt one
//! (a crash mid-append) and truncates the tail there.

use super::StoreError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// One logged operation; derived fields (versions) are recomputed on replay.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Put {
        rev: i64,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        rev: i64,
        key: String,
    },
    Compact {
        rev: i64,
    },
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = Vec::new();
        let (kind, rev, key, value): (u8, i64, &str, &[u8]) = match self {
            Record::Put { rev, key, value } => (1, *rev, key, value),
            Record::Delete { rev, key } => (2, *rev, key, &[]),
            Record::Compact { rev } => (3, *rev, "", &[]),
        };
        p.push(kind);
        p.extend_from_slice(&rev.to_le_bytes());
        p.extend_from_slice(&(key.len() as u32).to_le_bytes());
        p.extend_from_slice(key.as_bytes());
        p.extend_from_slice(&(value.len() as u32).to_le_bytes());
        p.extend_from_slice(value);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        out.extend_from_slice(&p);
    }

    fn decode(p: &[u8]) -> Option<Record> {
        let kind = *p.first()?;
        let rev = i64::from_le_bytes(p.get(1..9)?.try_into().ok()?);
        let klen = u32::from_le_bytes(p.get(9..13)?.try_into().ok()?) as usize;
        let key = String::from_utf8(p.get(13..13 + klen)?.to_vec()).ok()?;
        let voff = 13 + klen;
        let vlen = u32::from_le_bytes(p.get(voff..voff + 4)?.try_into().ok()?) as usize;
        let value = p.get(voff + 4..voff + 4 + vlen)?.to_vec();
        match kind {
            1 => Some(Record::Put { rev, key, value }),
            2 => Some(Record::Delete { rev, key }),
            3 => Some(Record::Compact { rev }),
            _ => None,
        }
    }
}

pub struct Wal {
    file: File,
}

/// What recovery cut off the end of the log: a write that was in progress when the
/// process died (never acknowledged: acknowledgement waits for the fsync).
#[derive(Debug, Clone, PartialEq)]
pub struct Torn {
    /// Where the intact records end.
    pub offset: u64,
    /// Bytes removed after it.
    pub cut: u64,
    /// Why the record there was not intact.
    pub why: &'static str,
}

impl Wal {
    pub(super) fn from_file(file: File) -> Wal {
        Wal { file }
    }

    /// Open (creating) the log, returning the intact records; a torn tail is cut off and
    /// reported.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Record>, Option<Torn>), StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| StoreError::Io(format!("open {}: {e}", path.display())))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| StoreError::Io(format!("read {}: {e}", path.display())))?;
        let mut records = Vec::new();
        let mut off = 0usize;
        let mut why = "a partial record header";
        while off + 8 <= data.len() {
            let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
            let Some(payload) = data.get(off + 8..off + 8 + len) else {
                why = "a record longer than the file";
                break;
            };
            if crc32fast::hash(payload) != crc {
                why = "a record whose checksum does not match";
                break;
            }
            let Some(r) = Record::decode(payload) else {
                why = "a record that does not decode";
                break;
            };
            records.push(r);
            off += 8 + len;
        }
        let torn = (off < data.len()).then(|| Torn {
            offset: off as u64,
            cut: (data.len() - off) as u64,
            why,
        });
        if off < data.len() {
            file.set_len(off as u64).map_err(|e| {
                StoreError::Io(format!("truncate torn tail of {}: {e}", path.display()))
            })?;
            file.sync_all().map_err(|e| StoreError::Io(e.to_string()))?;
        }
        Ok((Wal { file }, records, torn))
    }

    /// Append encoded records and make them durable.
    pub fn append_sync(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .map_err(|e| StoreError::Io(format!("append to WAL: {e}")))?;
        self.file
            .sync_data()
            .map_err(|e| StoreError::Io(format!("fsync WAL: {e}")))
    }

    pub fn truncate(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(|e| StoreError::Io(format!("truncate WAL: {e}")))?;
        self.file
            .sync_all()
            .map_err(|e| StoreError::Io(format!("fsync WAL: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("skiff-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal");
        let recs = vec![
            Record::Put {
                rev: 1,
                key: "/a".into(),
                value: b"x".to_vec(),
            },
            Record::Delete {
                rev: 2,
                key: "/a".into(),
            },
            Record::Compact { rev: 2 },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            r.encode(&mut buf);
        }
        let (mut w, none, torn) = Wal::open(&path).unwrap();
        assert!(none.is_empty());
        assert_eq!(torn, None);
        w.append_sync(&buf).unwrap();
        // A crash in the middle of the next append leaves half a record.
        let mut torn = Vec::new();
        Record::Put {
            rev: 3,
            key: "/b".into(),
            value: vec![7; 100],
        }
        .encode(&mut torn);
        let torn_len = torn.len();
        w.append_sync(&torn[..torn_len / 2]).unwrap();
        drop(w);
        let (_, got, torn) = Wal::open(&path).unwrap();
        assert_eq!(got, recs);
        assert_eq!(
            torn,
            Some(Torn {
                offset: buf.len() as u64,
                cut: (torn_len / 2) as u64,
                why: "a record longer than the file"
            })
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            buf.len(),
            "torn tail cut off"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
