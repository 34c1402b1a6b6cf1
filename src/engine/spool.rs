//! The journal's spool: where its records wait, on local disk, while PostgreSQL is away.
//!
//! One append-only file, `<data_dir>/spool/journal.spool`, of records framed as
//! `[length: u32 LE][CRC-32 of the payload: u32 LE][payload: JSON of a SpoolEntry]`. Every append
//! is `fdatasync`ed before the journal tells anyone its records are spooled, so what a caller was
//! told survives a crash of the engine or the machine. A record cut short by a crash in the middle
//! of an append (never acknowledged) fails its length or checksum: the file is cut back to the
//! last whole record when it is opened, and the loss is logged. The journal replays the spool in
//! order, idempotently, and empties it once everything in it is committed.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use portcullis_actors::journal::JournalRecord;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A frame's header: length and checksum.
const HEADER: usize = 8;
/// No record is larger (a journal batch is a handful of rows).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// One journal batch, as spooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// Set when the batch holds rows that must not be written twice (see `journal_batches`).
    pub id: Option<Uuid>,
    pub spooled_at: DateTime<Utc>,
    pub records: Vec<JournalRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({bytes} bytes; `journal.spool_max_bytes` is {max})")]
    Full { bytes: u64, max: u64 },
    #[error("spool `{}`: cannot {action}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a spool record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("spool `{}` is in use by another engine (each engine needs a data_dir of its own)", path.display())]
    InUse { path: PathBuf },
}

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
    /// Records in the file.
    records: u64,
    oldest: Option<DateTime<Utc>>,
    max_bytes: u64,
}

impl Spool {
    /// Opens (creating) the spool under `dir`, cutting off a torn last record.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io = |action, source| SpoolError::Io { action, path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(|e| io("create its directory", e))?;
        let path = dir.join("journal.spool");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        // Held until the engine exits: two engines appending to one spool would interleave.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::InUse { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", e)),
        }
        let mut spool = Spool { path, file, len: 0, records: 0, oldest: None, max_bytes };
        let on_disk = spool.file.metadata().map_err(|e| spool.io("read its size", e))?.len();
        let mut reader = spool.reader(0)?;
        while let Some(entry) = reader.next_entry() {
            spool.oldest.get_or_insert(entry.spooled_at);
            spool.records += 1;
        }
        spool.len = reader.position;
        if spool.len < on_disk {
            tracing::error!(
                path = %spool.path.display(),
                kept_bytes = spool.len,
                cut_bytes = on_disk - spool.len,
                "the spool ends with a record cut short (a crash during an append, never acknowledged); cutting it off"
            );
            spool.file.set_len(spool.len).map_err(|e| spool.io("cut off a torn record", e))?;
            spool.file.sync_all().map_err(|e| spool.io("sync", e))?;
        }
        Ok(spool)
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> SpoolError {
        SpoolError::Io { action, path: self.path.clone(), source }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// When the oldest record in the spool was spooled.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.oldest
    }

    /// Appends entries and syncs them to disk; all or nothing (a failed append is cut back off).
    pub fn append(&mut self, entries: &[SpoolEntry]) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for entry in entries {
            let payload = serde_json::to_vec(entry)?;
            let len = u32::try_from(payload.len()).ok().filter(|&n| n <= MAX_RECORD);
            let Some(len) = len else {
                return Err(SpoolError::Encode(serde::ser::Error::custom("a journal batch larger than 16 MiB")));
            };
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        let bytes = self.len + buf.len() as u64;
        if bytes > self.max_bytes {
            return Err(SpoolError::Full { bytes: self.len, max: self.max_bytes });
        }
        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&buf))
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            // Never leave half a record before the next append.
            let _ = self.file.set_len(self.len);
            return Err(self.io("append", err));
        }
        self.len = bytes;
        self.records += entries.len() as u64;
        if let Some(first) = entries.first() {
            self.oldest.get_or_insert(first.spooled_at);
        }
        Ok(())
    }

    /// Reads the records from byte `from` on (a position [`SpoolReader::position`] returned).
    pub fn reader(&self, from: u64) -> Result<SpoolReader, SpoolError> {
        let mut file = self.file.try_clone().map_err(|e| self.io("read", e))?;
        file.seek(SeekFrom::Start(from)).map_err(|e| self.io("read", e))?;
        Ok(SpoolReader { reader: BufReader::new(file), position: from, end: None })
    }

    /// Empties the spool (everything in it is committed).
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        self.file.set_len(0).map_err(|e| self.io("empty", e))?;
        self.file.sync_all().map_err(|e| self.io("sync", e))?;
        (self.len, self.records, self.oldest) = (0, 0, None);
        Ok(())
    }
}

/// Reads whole, intact records in order; stops at the end or at the first damaged one.
pub struct SpoolReader {
    reader: BufReader<File>,
    /// Where the next record starts.
    pub position: u64,
    end: Option<&'static str>,
}

impl SpoolReader {
    pub fn next_entry(&mut self) -> Option<SpoolEntry> {
        if self.end.is_some() {
            return None;
        }
        match self.read() {
            Ok(Some(entry)) => Some(entry),
            Ok(None) => None,
            Err(why) => {
                self.end = Some(why);
                None
            }
        }
    }

    /// Why reading stopped before the end of the file, if it did.
    pub fn damaged(&self) -> Option<&'static str> {
        self.end
    }

    fn read(&mut self) -> Result<Option<SpoolEntry>, &'static str> {
        let mut header = [0u8; HEADER];
        match self.reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(_) => return Err("unreadable"),
        }
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len > MAX_RECORD {
            return Err("a record length out of range");
        }
        let mut payload = vec![0u8; len as usize];
        self.reader.read_exact(&mut payload).map_err(|_| "a record cut short")?;
        if crc32fast::hash(&payload) != crc {
            return Err("a record whose checksum does not match");
        }
        let entry = serde_json::from_slice(&payload).map_err(|_| "a record that does not decode")?;
        self.position += (HEADER + payload.len()) as u64;
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_actors::domain::{CredentialKind, Decision, Direction, Reason, Source};
    use portcullis_actors::journal::CheckinRecord;

    fn entry(n: u128) -> SpoolEntry {
        let at = DateTime::from_timestamp(1_800_000_000 + n as i64, 0).unwrap_or_default();
        SpoolEntry {
            id: n.is_multiple_of(2).then(|| Uuid::from_u128(n)),
            spooled_at: at,
            records: vec![JournalRecord::Checkin(CheckinRecord {
                id: Uuid::from_u128(n),
                org_id: Uuid::from_u128(1),
                gate_id: Uuid::from_u128(2),
                pass_id: None,
                direction: Direction::In,
                decision: Decision::Deny,
                reason: Reason::UnknownCredential,
                source: Source::Api,
                credential_kind: Some(CredentialKind::Card),
                decided_at: at,
                alert: None,
            })],
        }
    }

    fn all(spool: &Spool) -> Result<Vec<SpoolEntry>, SpoolError> {
        let mut reader = spool.reader(0)?;
        Ok(std::iter::from_fn(|| reader.next_entry()).collect())
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen_and_a_torn_tail_is_cut_off() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let written: Vec<SpoolEntry> = (0..5).map(entry).collect();
        let mut spool = Spool::open(dir.path(), 1 << 20)?;
        spool.append(&written[..2])?;
        spool.append(&written[2..])?;
        let whole = spool.bytes();
        drop(spool);
        // A crash in the middle of an append: half a header and no payload.
        let mut file = OpenOptions::new().append(true).open(dir.path().join("journal.spool"))?;
        file.write_all(&[200, 0, 0])?;
        drop(file);

        let spool = Spool::open(dir.path(), 1 << 20)?;
        assert_eq!(spool.bytes(), whole);
        assert_eq!(spool.records(), 5);
        assert_eq!(all(&spool)?, written);
        assert_eq!(std::fs::metadata(dir.path().join("journal.spool"))?.len(), whole);
        Ok(())
    }

    #[test]
    fn a_damaged_record_stops_the_reader_and_is_cut_off_at_open() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut spool = Spool::open(dir.path(), 1 << 20)?;
        spool.append(&[entry(1)])?;
        let first = spool.bytes();
        spool.append(&[entry(2)])?;
        drop(spool);
        let path = dir.path().join("journal.spool");
        let mut bytes = std::fs::read(&path)?;
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xff;
        }
        std::fs::write(&path, bytes)?;
        let spool = Spool::open(dir.path(), 1 << 20)?;
        assert_eq!((spool.records(), spool.bytes()), (1, first));
        assert_eq!(all(&spool)?, vec![entry(1)]);
        Ok(())
    }

    #[test]
    fn a_second_engine_cannot_open_a_spool_in_use() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = Spool::open(dir.path(), 1 << 20)?;
        assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::InUse { .. })));
        drop(first);
        Spool::open(dir.path(), 1 << 20)?;
        Ok(())
    }

    #[test]
    fn a_full_spool_refuses_the_append_whole_and_keeps_what_it_had() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut spool = Spool::open(dir.path(), 600)?;
        spool.append(&[entry(1)])?;
        let before = spool.bytes();
        let refused = spool.append(&[entry(2), entry(3), entry(4)]);
        assert!(matches!(refused, Err(SpoolError::Full { .. })), "{refused:?}");
        assert_eq!((spool.records(), spool.bytes()), (1, before));
        spool.clear()?;
        assert!(spool.is_empty() && all(&spool)?.is_empty());
        Ok(())
    }
}
