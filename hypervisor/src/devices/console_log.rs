//! The domain's console log on disk, bounded in size and in rate.
//!
//! A guest may write to its console without end (a loop printing, a
//! flood of kernel messages): the log must not fill dom0's disk, nor keep
//! the disk busy. As xenconsoled does, the log is rotated at a size (the
//! file is renamed to `NAME.1`, replacing the one before, and a new one is
//! started), so a domain's console takes at most twice that on disk; and
//! what arrives faster than a rate (a token bucket with a burst) is left
//! out of the log, counted, and said so in the log when output is kept
//! again. The live console (stdout or dom0's socket) is not limited here.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Size at which the log is rotated; the domain's console then takes at
/// most twice this on disk (the log and `NAME.1`).
pub const ROTATE_AT: u64 = 8 << 20;
/// Bytes per second the log takes in the long run.
pub const RATE: u64 = 256 << 10;
/// Bytes the log takes at once before the rate applies (a boot log fits).
pub const BURST: u64 = 2 << 20;

/// The console log file.
pub struct BoundedLog {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    rotate_at: u64,
    /// Only a regular file is rotated (never `/dev/null` or a pipe the
    /// user named as the log).
    regular: bool,
    /// Token bucket: bytes that may be written now, refilled at `rate`.
    tokens: f64,
    rate: f64,
    burst: f64,
    last_refill: Instant,
    /// Bytes left out since output was last kept.
    dropped: u64,
    /// Bytes left out in all.
    pub dropped_total: u64,
    /// Times the log was rotated.
    pub rotations: u64,
}

impl BoundedLog {
    /// Opens (appends to) the log at `path` with the default bounds.
    pub fn open(path: &Path) -> io::Result<BoundedLog> {
        BoundedLog::with_bounds(path, ROTATE_AT, RATE, BURST, Instant::now())
    }

    /// Opens the log at `path` rotating at `rotate_at` bytes, taking `rate`
    /// bytes per second after a burst of `burst`.
    pub fn with_bounds(path: &Path, rotate_at: u64, rate: u64, burst: u64, now: Instant) -> io::Result<BoundedLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        Ok(BoundedLog {
            path: path.to_owned(),
            file,
            size: meta.len(),
            rotate_at: rotate_at.max(1),
            regular: meta.is_file(),
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            last_refill: now,
            dropped: 0,
            dropped_total: 0,
            rotations: 0,
        })
    }

    /// The rotated file's path (`NAME.1`).
    pub fn rotated_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Logs `buf` (what the rate allows) at time `now`. Errors (a full
    /// disk) are the caller's to ignore: the guest must not stop for them.
    pub fn write_at(&mut self, buf: &[u8], now: Instant) -> io::Result<()> {
        let elapsed = now.saturating_duration_since(self.last_refill).as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let allowed = (self.tokens.max(0.0) as u64).min(buf.len() as u64) as usize;
        self.tokens -= allowed as f64;
        let (kept, lost) = buf.split_at(allowed);
        if !kept.is_empty() && self.dropped > 0 {
            let note = format!("\n[console log: {} bytes left out here, over {} bytes/s]\n", self.dropped, self.rate as u64);
            self.dropped = 0;
            self.append(note.as_bytes())?;
        }
        if !lost.is_empty() {
            self.dropped += lost.len() as u64;
            self.dropped_total += lost.len() as u64;
        }
        if kept.is_empty() {
            return Ok(());
        }
        self.append(kept)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.regular && self.size + buf.len() as u64 > self.rotate_at && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// `NAME` becomes `NAME.1` (replacing it) and a new `NAME` begins.
    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, self.rotated_path())?;
        self.file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        self.size = 0;
        self.rotations += 1;
        let note = format!("[console log rotated at {} bytes: the output before is in {}]\n", self.rotate_at, self.rotated_path().display());
        self.file.write_all(note.as_bytes())?;
        self.size += note.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("console-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("serial.log")
    }

    fn disk_use(log: &BoundedLog) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        len(&log.path) + len(&log.rotated_path())
    }

    #[test]
    fn an_endless_writer_takes_at_most_twice_the_rotation_size() {
        let path = temp("rotate");
        let t0 = Instant::now();
        let mut log = BoundedLog::with_bounds(&path, 64 << 10, u64::MAX / 4, u64::MAX / 4, t0).unwrap();
        let line = [b'x'; 1000];
        for _ in 0..1000 {
            log.write_at(&line, t0).unwrap();
        }
        assert!(log.rotations >= 15, "1 MB through a 64 KiB log rotates: {}", log.rotations);
        let used = disk_use(&log);
        assert!(used <= 2 * (64 << 10) + 200, "disk use {used}");
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.starts_with("[console log rotated at 65536 bytes"), "{}", &current[..80]);
        assert!(std::fs::metadata(log.rotated_path()).unwrap().len() > 60_000);
    }

    #[test]
    fn output_beyond_the_rate_is_left_out_and_said_so() {
        let path = temp("rate");
        let t0 = Instant::now();
        let mut log = BoundedLog::with_bounds(&path, 1 << 30, 1000, 4000, t0).unwrap();
        // the burst is kept, the rest of a flood is not
        log.write_at(&[b'a'; 10_000], t0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4000);
        assert_eq!(log.dropped_total, 6000);
        // two seconds later 2000 bytes may come; the log says what was left out
        log.write_at(&[b'b'; 3000], t0 + Duration::from_secs(2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[console log: 6000 bytes left out here, over 1000 bytes/s]"), "{text}");
        assert!(text.ends_with(&"b".repeat(2000)) && !text.ends_with(&"b".repeat(2001)), "{text}");
        assert_eq!(log.dropped_total, 7000);
    }

    #[test]
    fn a_log_that_is_no_regular_file_is_never_rotated() {
        // A FIFO stands for /dev/null (which a regression must not get to
        // rename in a test run as root); a reader keeps it writable.
        use std::os::unix::fs::OpenOptionsExt;
        let path = temp("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let _reader = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
        let t0 = Instant::now();
        let mut log = BoundedLog::with_bounds(&path, 10, u64::MAX / 4, u64::MAX / 4, t0).unwrap();
        for _ in 0..10 {
            log.write_at(b"0123456789", t0).unwrap();
        }
        assert_eq!(log.rotations, 0);
        assert!(!log.rotated_path().exists());
    }

    #[test]
    fn an_existing_log_is_appended_to_and_counted() {
        let path = temp("append");
        std::fs::write(&path, vec![b'o'; 100]).unwrap();
        let t0 = Instant::now();
        let mut log = BoundedLog::with_bounds(&path, 150, 1 << 20, 1 << 20, t0).unwrap();
        log.write_at(&[b'n'; 40], t0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 140);
        log.write_at(&[b'n'; 40], t0).unwrap();
        assert_eq!(log.rotations, 1, "the old content counts towards the size");
        assert_eq!(std::fs::metadata(log.rotated_path()).unwrap().len(), 140);
    }
}
