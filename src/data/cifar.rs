//! CIFAR-10 readers: the python-pickle batches (read by our restricted pickle
//! machine, never by Python's `pickle`), the binary batches, and both official
//! `.tar.gz` archives read in memory. Output matches
//! `keras.datasets.cifar10.load_data()`: uint8 NHWC images and `(N, 1)` labels.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Array4};
use rayon::prelude::*;

use super::pickle::{self, Value};
use crate::{Error, Result};

/// Image side in pixels.
pub const SIDE: usize = 32;
/// Bytes of one image: three 32×32 planes, R then G then B.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Number of classes.
pub const NUM_CLASSES: u8 = 10;
/// The class names in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Images in one batch file: the official batches hold 10 000 each.
pub const MAX_BATCH_IMAGES: usize = 10_000;
/// The largest batch file (or archive member) read: a full batch is 30 MiB
/// of pixels, which a Python 3 re-pickle at protocol 2 stores as latin-1
/// text of up to twice that, plus labels and file names.
pub const MAX_BATCH_BYTES: u64 = 80 << 20;
/// The most an archive may expand to: its six batches and the small files
/// beside them (the official archives expand to 178 MB).
pub const MAX_ARCHIVE_BYTES: u64 = 6 * MAX_BATCH_BYTES + (32 << 20);

const PICKLE_BATCHES: [&str; 6] = [
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
];

/// Where the batch folders sit below a search root, across Keras versions,
/// torchvision and plain extraction; then the archives themselves.
const LAYOUTS: [&str; 10] = [
    "",
    "cifar-10-batches-py",
    "cifar-10-batches-py/cifar-10-batches-py",
    "cifar-10-batches-py-target/cifar-10-batches-py",
    "cifar-10-batches-py_extracted/cifar-10-batches-py",
    "cifar-10-batches-bin",
    "cifar-10-binary/cifar-10-batches-bin",
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py.tar.gz",
    "cifar-10-binary.tar.gz",
];

/// One split in Keras layout.
#[derive(Debug, Clone)]
pub struct Split {
    /// `(N, 32, 32, 3)` uint8, channels last.
    pub images: Array4<u8>,
    /// `(N, 1)` uint8 class labels in `0..10`.
    pub labels: Array2<u8>,
}

/// The whole dataset: the five training batches, then the test batch.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    pub train: Split,
    pub test: Split,
}

/// A located copy of CIFAR-10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A folder with `data_batch_1`..`data_batch_5` and `test_batch` (pickles).
    PickleDir(PathBuf),
    /// A folder with `data_batch_1.bin`..`data_batch_5.bin` and `test_batch.bin`.
    BinDir(PathBuf),
    /// `cifar-10-python.tar.gz` or `cifar-10-binary.tar.gz`.
    Archive(PathBuf),
}

impl Source {
    /// The folder or archive this source reads.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Source::PickleDir(p) | Source::BinDir(p) | Source::Archive(p) => p,
        }
    }
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

fn classify(candidate: &Path) -> Option<Source> {
    if candidate.is_file() {
        return is_gzip(candidate).then(|| Source::Archive(candidate.to_path_buf()));
    }
    if !candidate.is_dir() {
        return None;
    }
    let has = |name: &str| candidate.join(name).is_file();
    if PICKLE_BATCHES.iter().any(|b| has(b)) {
        Some(Source::PickleDir(candidate.to_path_buf()))
    } else if PICKLE_BATCHES.iter().any(|b| has(&format!("{b}.bin"))) {
        Some(Source::BinDir(candidate.to_path_buf()))
    } else {
        None
    }
}

/// Finds CIFAR-10 at or below `root`: a batch folder itself, an archive, or a
/// folder holding either in one of the layouts Keras (2 and 3), torchvision or
/// a plain `tar xzf` leave behind. `None` when nothing is there.
#[must_use]
pub fn locate(root: &Path) -> Option<Source> {
    LAYOUTS.iter().find_map(|sub| {
        let candidate = if sub.is_empty() {
            root.to_path_buf()
        } else {
            root.join(sub)
        };
        classify(&candidate)
    })
}

/// Reads the dataset from a located source.
///
/// # Errors
/// [`Error::NotFound`] for a missing batch file, [`Error::Io`] when a file
/// cannot be read, [`Error::Format`] naming the file and the problem for a
/// corrupt, truncated or foreign batch or archive. Never a partial dataset.
pub fn read(source: &Source) -> Result<Cifar10> {
    let (files, binary) = match source {
        Source::PickleDir(dir) | Source::BinDir(dir) => {
            let binary = matches!(source, Source::BinDir(_));
            let files = PICKLE_BATCHES
                .par_iter()
                .map(|b| {
                    let path = dir.join(if binary {
                        format!("{b}.bin")
                    } else {
                        (*b).to_string()
                    });
                    let bytes =
                        crate::fileio::read_limited(&path, MAX_BATCH_BYTES, "CIFAR-10 batch")?;
                    Ok((path.display().to_string(), bytes))
                })
                .collect::<Result<Vec<_>>>()?;
            (files, binary)
        }
        Source::Archive(path) => read_archive(path)?,
    };
    let batches = files
        .par_iter()
        .map(|(name, bytes)| {
            if binary {
                parse_bin_batch(bytes)
            } else {
                parse_pickle_batch(bytes)
            }
            .map_err(|msg| Error::format(format!("{name}: {msg}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let (train, test) = batches.split_at(5);
    Ok(Cifar10 {
        train: assemble(train),
        test: assemble(test),
    })
}

/// [`locate`] then [`read`].
///
/// # Errors
/// [`Error::NotFound`] when no copy is at `root`; otherwise as [`read`].
pub fn load(root: &Path) -> Result<Cifar10> {
    let source = locate(root).ok_or_else(|| Error::NotFound(root.to_path_buf()))?;
    read(&source)
}

/// A batch file's display name and bytes.
type Member = (String, Vec<u8>);

/// The six batch members of an official archive, read in memory, in order.
fn read_archive(path: &Path) -> Result<(Vec<Member>, bool)> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |e: std::io::Error| {
        Error::format(format!(
            "{}: corrupt or truncated .tar.gz archive: {e}",
            path.display()
        ))
    };
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut archive = tar::Archive::new(Bounded {
        inner: gz,
        left: MAX_ARCHIVE_BYTES,
    });
    let mut members: Vec<Option<Member>> = vec![None; 12];
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(corrupt)?.into_owned();
        let Some(base) = member.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let slot = PICKLE_BATCHES.iter().position(|b| *b == base).or_else(|| {
            PICKLE_BATCHES
                .iter()
                .position(|b| base.strip_suffix(".bin") == Some(b))
                .map(|i| i + 6)
        });
        if let Some(slot) = slot {
            let name = format!("{}:{}", path.display(), member.display());
            // The header's size first, then a bounded read: a member that
            // expands to gigabytes is refused before any of it is held.
            let size = entry.size();
            if size > MAX_BATCH_BYTES {
                return Err(Error::format(format!(
                    "{name}: a {size}-byte member is larger than any CIFAR-10 batch \
                     ({} MiB at most)",
                    MAX_BATCH_BYTES >> 20
                )));
            }
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(size as usize).map_err(|_| {
                Error::OutOfMemory(format!("cannot allocate {size} bytes for {name}"))
            })?;
            (&mut entry)
                .take(MAX_BATCH_BYTES)
                .read_to_end(&mut bytes)
                .map_err(corrupt)?;
            members[slot] = Some((name, bytes));
        }
    }
    // Drain the gzip stream to its end so a truncated tail is reported, not ignored.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    let (pickles, bins) = members.split_at(6);
    let binary = !pickles.iter().any(Option::is_some) && bins.iter().any(Option::is_some);
    let chosen = if binary { bins } else { pickles };
    let missing: Vec<String> = chosen
        .iter()
        .zip(PICKLE_BATCHES)
        .filter(|(m, _)| m.is_none())
        .map(|(_, b)| {
            if binary {
                format!("{b}.bin")
            } else {
                b.to_string()
            }
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::format(format!(
            "{}: archive lacks CIFAR-10 batch(es) {}",
            path.display(),
            missing.join(", ")
        )));
    }
    Ok((chosen.iter().flatten().cloned().collect(), binary))
}

/// A reader that fails once `inner` has produced more than `left` bytes: the
/// bound on what an archive may expand to (a gzip bomb of skipped members
/// would otherwise be decompressed to its end).
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte beyond the limit tells "exactly at the limit" from "over".
        let want = buf
            .len()
            .min(usize::try_from(self.left + 1).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "it expands to more than {} MiB, more than CIFAR-10 needs",
                MAX_ARCHIVE_BYTES >> 20
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A batch: `n` rows of 3072 bytes (R, G, B planes) and `n` labels.
struct Batch {
    data: Vec<u8>,
    labels: Vec<u8>,
}

fn check_labels(labels: impl IntoIterator<Item = i64>) -> std::result::Result<Vec<u8>, String> {
    labels
        .into_iter()
        .map(|l| {
            u8::try_from(l)
                .ok()
                .filter(|&l| l < NUM_CLASSES)
                .ok_or_else(|| format!("label {l} is outside 0..{NUM_CLASSES}"))
        })
        .collect()
}

fn check_count(n: usize) -> std::result::Result<(), String> {
    if n > MAX_BATCH_IMAGES {
        return Err(format!(
            "{n} images in one batch; a CIFAR-10 batch holds at most {MAX_BATCH_IMAGES}"
        ));
    }
    Ok(())
}

fn parse_bin_batch(bytes: &[u8]) -> std::result::Result<Batch, String> {
    const RECORD: usize = IMAGE_BYTES + 1;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(format!(
            "{} bytes is not a whole number of {RECORD}-byte records (label + 3072 pixels); \
             the file is truncated or not a CIFAR-10 binary batch",
            bytes.len()
        ));
    }
    let n = bytes.len() / RECORD;
    check_count(n)?;
    let mut data = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for record in bytes.chunks_exact(RECORD) {
        labels.push(i64::from(record[0]));
        data.extend_from_slice(&record[1..]);
    }
    Ok(Batch {
        data,
        labels: check_labels(labels)?,
    })
}

fn parse_pickle_batch(bytes: &[u8]) -> std::result::Result<Batch, String> {
    let root = pickle::load(bytes).map_err(|e| format!("not a CIFAR-10 pickle batch: {e}"))?;
    let Value::Dict(dict) = root else {
        return Err("not a CIFAR-10 pickle batch: the pickle is not a dict".into());
    };
    let dict = dict.borrow();
    let get = |key: &[u8]| {
        dict.iter()
            .find(|(k, _)| k.as_key() == Some(key))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("batch has no {:?} entry", String::from_utf8_lossy(key)))
    };
    let Value::Array(array) = get(b"data")? else {
        return Err("batch 'data' is not a numpy array".into());
    };
    let array = array.borrow();
    let dtype = array
        .dtype
        .ok_or("batch 'data' array was never filled in")?;
    if dtype.itemsize != 1 || dtype.signed {
        return Err(format!(
            "batch 'data' must be uint8, got {}{}",
            if dtype.signed { "int" } else { "uint" },
            8 * dtype.itemsize
        ));
    }
    let n = array.shape.first().copied().unwrap_or(0);
    let per_row: usize = array.shape.iter().skip(1).product();
    if array.shape.len() < 2 || per_row != IMAGE_BYTES {
        return Err(format!(
            "batch 'data' must have shape (N, 3072), got {:?}",
            array.shape
        ));
    }
    check_count(n)?;
    let labels: Vec<i64> = match get(b"labels")? {
        Value::List(list) => list
            .borrow()
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                other => Err(format!("a batch label is a {}, not an int", other.kind())),
            })
            .collect::<std::result::Result<_, _>>()?,
        Value::Array(a) => a
            .borrow()
            .to_i64()
            .ok_or("batch 'labels' array is not integer")?,
        _ => return Err("batch 'labels' is not a list of ints".into()),
    };
    if labels.len() != n {
        return Err(format!(
            "batch holds {n} images but {} labels",
            labels.len()
        ));
    }
    Ok(Batch {
        data: array.data.as_ref().clone(),
        labels: check_labels(labels)?,
    })
}

/// Concatenates batches and reorders each image from planar CHW to HWC.
fn assemble(batches: &[Batch]) -> Split {
    let n: usize = batches.iter().map(|b| b.labels.len()).sum();
    let mut images = Array4::<u8>::zeros((n, SIDE, SIDE, 3));
    let rows: Vec<&[u8]> = batches
        .iter()
        .flat_map(|b| b.data.chunks_exact(IMAGE_BYTES))
        .collect();
    images
        .as_slice_mut()
        .expect("fresh array is contiguous")
        .par_chunks_mut(IMAGE_BYTES)
        .zip(rows.par_iter())
        .for_each(|(out, row)| {
            let plane = SIDE * SIDE;
            for p in 0..plane {
                out[3 * p] = row[p];
                out[3 * p + 1] = row[plane + p];
                out[3 * p + 2] = row[2 * plane + p];
            }
        });
    let labels: Vec<u8> = batches
        .iter()
        .flat_map(|b| b.labels.iter().copied())
        .collect();
    let labels = Array2::from_shape_vec((n, 1), labels).expect("one label per image");
    Split { images, labels }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin_batch(n: usize, seed: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(u8::try_from(i % 10).unwrap());
            out.extend((0..IMAGE_BYTES).map(|j| (j as u8).wrapping_mul(7).wrapping_add(seed)));
        }
        out
    }

    #[test]
    fn reads_binary_folder_as_nhwc() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        fs::create_dir(&sub).unwrap();
        for (i, b) in PICKLE_BATCHES.iter().enumerate() {
            fs::write(sub.join(format!("{b}.bin")), bin_batch(2, i as u8)).unwrap();
        }
        let source = locate(dir.path()).unwrap();
        assert_eq!(source, Source::BinDir(sub.clone()));
        let ds = read(&source).unwrap();
        assert_eq!(ds.train.images.dim(), (10, 32, 32, 3));
        assert_eq!(ds.test.labels.dim(), (2, 1));
        assert_eq!(ds.train.labels[[1, 0]], 1);
        // pixel (y=1, x=2) of channel G of the first image: plane offset 1024 + 34
        let row = bin_batch(1, 0);
        assert_eq!(ds.train.images[[0, 1, 2, 1]], row[1 + 1024 + 34]);
    }

    #[test]
    fn truncated_binary_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        for b in PICKLE_BATCHES {
            let mut bytes = bin_batch(2, 0);
            if b == "data_batch_3" {
                bytes.pop();
            }
            fs::write(dir.path().join(format!("{b}.bin")), bytes).unwrap();
        }
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::Format(ref m) if m.contains("data_batch_3.bin")),
            "{err}"
        );
    }

    #[test]
    fn huge_archive_members_are_refused_before_reading() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cifar-10-python.tar.gz");
        let mut header = tar::Header::new_gnu();
        header.set_path("cifar-10-batches-py/data_batch_1").unwrap();
        header.set_size(6 << 30);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(header.as_bytes()).unwrap();
        gz.write_all(&[0; 4096]).unwrap(); // the body is never read
        fs::write(&path, gz.finish().unwrap()).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::Format(ref m) if m.contains("larger than any CIFAR-10 batch")),
            "{err}"
        );
    }

    #[test]
    fn bounded_reader_fails_past_its_limit() {
        let mut ok = Bounded {
            inner: &[7u8; 10][..],
            left: 10,
        };
        let mut out = Vec::new();
        assert_eq!(ok.read_to_end(&mut out).unwrap(), 10);
        let mut over = Bounded {
            inner: &[7u8; 11][..],
            left: 10,
        };
        assert!(over.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn nothing_there_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Err(Error::NotFound(_))));
    }
}
