//! Files written and read safely: the one atomic writer of the package and a
//! bounded reader for files that come from elsewhere.
//!
//! Every writer in cnnrs (model save, checkpoints, demo reports, dataset
//! downloads) goes through [`AtomicFile`]: the bytes go to a temporary file
//! created *exclusively* (`O_CREAT | O_EXCL | O_NOFOLLOW`) under an
//! unpredictable name in the target folder, are synced, and the file is renamed
//! over the target. So a reader sees the old file or the new one, never half of
//! one; a symlink planted at any name the writer could use is never followed
//! (the exclusive create fails on it, and `rename` replaces a link at the
//! target itself rather than writing through it); and two writers of the same
//! path never share a temporary file.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

use libc::{O_NOFOLLOW, O_NONBLOCK};
/// How many fresh names a writer tries before giving up (each collision is a
/// file someone else made at a 64-bit random name: only an attacker does that).
const NAME_ATTEMPTS: usize = 16;

/// A 64-bit value no other process can predict: SipHash under the process's
/// random keys of a counter, the pid and the time.
fn unpredictable() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

/// A file being written beside its target; [`AtomicFile::commit`] makes it the
/// target, dropping it uncommitted removes it.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates the temporary file beside `target`.
    ///
    /// # Errors
    /// `InvalidArgument` if `target` names no file, `Io`/`NotFound` if its
    /// folder is missing or not writable.
    pub fn create(target: &Path) -> Result<Self> {
        let name = target.file_name().ok_or_else(|| {
            Error::invalid(format!("path {} does not name a file", target.display()))
        })?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut last = None;
        for _ in 0..NAME_ATTEMPTS {
            let tmp = dir.join(format!(
                ".{}.{:016x}.tmp",
                name.to_string_lossy(),
                unpredictable()
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(O_NOFOLLOW)
                .mode(0o666)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        target: target.to_path_buf(),
                        tmp,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(Error::io(target, e)),
            }
        }
        Err(Error::io(
            target,
            last.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
        ))
    }

    /// The path this file will have once committed.
    #[must_use]
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    /// `Io` when the disk refuses, `InvalidArgument` after `commit`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().ok_or_else(|| {
            Error::invalid(format!(
                "{} was already committed or aborted",
                self.target.display()
            ))
        })?;
        file.write_all(bytes)
            .map_err(|e| Error::io(&self.target, e))
    }

    /// Syncs the data, renames the file over the target and syncs the folder.
    ///
    /// # Errors
    /// `Io` when syncing or renaming fails; the temporary file is removed.
    pub fn commit(mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Err(Error::invalid(format!(
                "{} was already committed or aborted",
                self.target.display()
            )));
        };
        // A file that replaces another keeps its permissions, as editors do.
        let keep_mode = std::fs::metadata(&self.target)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.permissions());
        let result = keep_mode
            .map_or(Ok(()), |p| file.set_permissions(p))
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.target));
        drop(file);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(Error::io(&self.target, e));
        }
        // The rename is durable once the folder's entry is on disk; a folder
        // that cannot be opened or synced (some network filesystems) still
        // holds the new file, so that failure is not the caller's problem.
        if let Some(dir) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Removes the temporary file; the target is left as it was.
    pub fn abort(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Writes `bytes` to `path` through an [`AtomicFile`].
///
/// # Errors
/// As [`AtomicFile::create`], [`AtomicFile::write`] and [`AtomicFile::commit`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write(bytes)?;
    f.commit()
}

/// Reads all of `path`, a regular file, refusing files longer than `limit`
/// bytes before reading more than `limit + 1` of them. Devices, FIFOs and
/// sockets are refused without reading (so `/dev/zero` cannot exhaust memory
/// and a FIFO cannot hang the caller). `what` names the file in the error.
///
/// # Errors
/// `NotFound`/`Io` for unreadable files, `Format` for files over the limit
/// or that are not regular files.
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let (file, hint) = open_regular(path, what)?;
    if hint > limit {
        return Err(too_large(path, limit, what));
    }
    let mut buf = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(too_large(path, limit, what));
    }
    Ok(buf)
}

/// Opens `path` for reading if it is a regular file, with its length.
/// Devices, FIFOs and sockets are refused (`Format`) and folders are an
/// `IsADirectory` I/O error, all without reading: the open is non-blocking,
/// since opening a FIFO with no writer would otherwise wait forever.
///
/// # Errors
/// As described; `NotFound`/`Io` for files that cannot be opened.
pub fn open_regular(path: &Path, what: &str) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    if metadata.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        ));
    }
    if !metadata.is_file() {
        return Err(Error::format(format!(
            "{} is not a regular file; cnnrs reads a {what} only from regular files",
            path.display()
        )));
    }
    Ok((file, metadata.len()))
}

fn too_large(path: &Path, limit: u64, what: &str) -> Error {
    Error::format(format!(
        "{} is larger than any {what} cnnrs reads ({} MiB at most); refusing to read it",
        path.display(),
        limit >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        write_atomically(&target, b"first").unwrap();
        write_atomically(&target, b"second").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second");

        // A symlink at the target is replaced, not written through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());

        // Nothing is left behind, committed or dropped.
        let dropped = AtomicFile::create(&dir.path().join("never")).unwrap();
        drop(dropped);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| Path::new(n).extension().is_none_or(|e| e != "tmp")),
            "{names:?}"
        );
        assert!(!dir.path().join("never").exists());
    }

    #[test]
    fn temporary_names_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = AtomicFile::create(&dir.path().join("x")).unwrap();
        let b = AtomicFile::create(&dir.path().join("x")).unwrap();
        assert_ne!(a.tmp, b.tmp);
    }

    #[test]
    fn bounded_reads_refuse_big_and_endless_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 100]).unwrap();
        assert_eq!(read_limited(&p, 100, "file").unwrap().len(), 100);
        assert!(matches!(
            read_limited(&p, 99, "file"),
            Err(Error::Format(_))
        ));
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 1 << 20, "file"),
            Err(Error::Format(_))
        ));
        // A FIFO with no writer is refused at once instead of blocking.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            read_limited(&fifo, 1 << 20, "file"),
            Err(Error::Format(_))
        ));
    }
}
