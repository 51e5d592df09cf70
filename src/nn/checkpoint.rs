//! The saved-model format: one safetensors file holding every tensor of the
//! `VarStore` as float32 and, in its header's metadata, the JSON that rebuilds
//! the model (architecture and layers, input shape, classes, normalisation,
//! precision).
//!
//! Reading follows safetensors' own rule for files from elsewhere: read the
//! header with a bounded read, validate every size and shape against it and
//! against the architecture it describes (layers checked exactly as a user's
//! specs are), check the file is exactly as long as that implies, and only
//! then allocate anything.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::arch::{self, Layer};
use super::config::ModelConfig;
use super::input::Normalization;
use super::model::Model;
use super::optim::OptimizerSpec;
use super::precision::Precision;
use super::recipe::{self, Settings};
use super::tta::Tta;
use crate::error::{Error, Result};

/// What is saved beside the weights, as JSON in the safetensors header.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedMeta {
    format: u32,
    architecture: String,
    layers: Vec<Layer>,
    learning_rate: f64,
    input_shape: [usize; 3],
    num_classes: usize,
    class_names: Option<Vec<String>>,
    normalization: Normalization,
    seed: u64,
    /// Absent in format 1 files (which were all float32).
    #[serde(default = "fp32")]
    precision: Precision,
    /// Absent in format 1 files (Adam with Keras's defaults, no smoothing).
    #[serde(default)]
    optimizer: OptimizerSpec,
    #[serde(default)]
    label_smoothing: f64,
    /// The recipe's settings (its name is the architecture's); absent
    /// before format 3 (no recipe). Saved under the name format 3 gave it.
    #[serde(default)]
    decoupled: Option<Settings>,
    #[serde(default)]
    tta: Tta,
}

fn fp32() -> Precision {
    Precision::Fp32
}

const FORMAT_VERSION: u32 = 3;
const META_KEY: &str = "cnnrs";
/// The largest JSON header read (a real one is a few KiB; class names for
/// 100,000 classes fit): a bound on what parsing it can allocate.
const MAX_HEADER: u64 = 8 << 20;
/// The most tensors, and dimensions per tensor, a model file may declare.
const MAX_TENSORS: usize = 10_000;
const MAX_RANK: usize = 8;

struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes the weights and everything needed to use them again to `path`
/// (safetensors, metadata as JSON in its header), atomically: the file
/// appears whole or not at all, never through a symlink.
///
/// # Errors
/// `InvalidArgument` for an untrained model, `Io` for write failures.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let b = model.built().ok_or_else(|| {
        Error::invalid("save: the model has not been built or trained yet; call fit first")
    })?;
    let normalization = b.normalization.clone().ok_or_else(|| {
        Error::invalid("save: the model has not been trained yet; call fit first")
    })?;
    let config = model.config();
    let meta = SavedMeta {
        format: FORMAT_VERSION,
        architecture: config.architecture.clone(),
        layers: config.layers.clone(),
        learning_rate: config.learning_rate,
        input_shape: b.input_shape,
        num_classes: b.num_classes,
        class_names: model.class_names().map(<[String]>::to_vec),
        normalization,
        seed: config.seed,
        precision: config.precision,
        optimizer: config.optimizer,
        label_smoothing: config.label_smoothing,
        decoupled: config.recipe.as_ref().map(|r| r.settings),
        tta: config.tta,
    };
    let meta_json = serde_json::to_string(&meta).map_err(|e| Error::format(e.to_string()))?;
    let tensors: Vec<(String, F32View)> = model
        .state_dict()?
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, F32View { shape, bytes })
        })
        .collect();
    let info = HashMap::from([(META_KEY.to_string(), meta_json)]);
    let buffer = safetensors::serialize(tensors, &Some(info))
        .map_err(|e| Error::format(format!("cannot serialise the model: {e}")))?;
    crate::fileio::write_atomically(path, &buffer)
}

/// One tensor entry of a safetensors header.
#[derive(Clone, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// The parts of a file checked before anything is allocated from it.
struct Header {
    len: u64,
    entries: HashMap<String, Entry>,
    meta: SavedMeta,
}

/// Reads and parses the header with a bounded read.
fn read_header(file: &mut File, file_len: u64, bad: &dyn Fn(String) -> Error) -> Result<Header> {
    let mut len8 = [0u8; 8];
    file.read_exact(&mut len8)
        .map_err(|_| bad("it is shorter than a safetensors header".into()))?;
    let len = u64::from_le_bytes(len8);
    if len > MAX_HEADER || len + 8 > file_len {
        return Err(bad(format!(
            "its header claims {len} bytes in a file of {file_len}"
        )));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("its header cannot be read: {e}")))?;
    let mut raw: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("its header: {e}")))?;
    let meta_json = raw
        .remove("__metadata__")
        .and_then(|m| m.get(META_KEY).and_then(|v| v.as_str().map(String::from)))
        .ok_or_else(|| bad("it has no cnnrs metadata (was it written by Model.save?)".into()))?;
    let meta: SavedMeta = serde_json::from_str(&meta_json).map_err(|e| bad(e.to_string()))?;
    if !(1..=FORMAT_VERSION).contains(&meta.format) {
        return Err(bad(format!(
            "format version {} is not supported (this cnnrs reads versions 1 to {FORMAT_VERSION})",
            meta.format
        )));
    }
    if raw.len() > MAX_TENSORS {
        return Err(bad(format!(
            "it declares {} tensors; a cnnrs model has at most {MAX_TENSORS}",
            raw.len()
        )));
    }
    let entries: HashMap<String, Entry> = raw
        .into_iter()
        .map(|(name, value)| {
            serde_json::from_value::<Entry>(value)
                .map(|e| (name.clone(), e))
                .map_err(|err| bad(format!("tensor {name:?}: {err}")))
        })
        .collect::<Result<_>>()?;
    if let Some((name, _)) = entries.iter().find(|(_, e)| e.shape.len() > MAX_RANK) {
        return Err(bad(format!(
            "tensor {name:?} has more than {MAX_RANK} dimensions"
        )));
    }
    Ok(Header { len, entries, meta })
}

/// Checks the tensors hold exactly the architecture's weights, as float32,
/// packed without gaps, and that the file is exactly that long; returns the
/// size of the data section.
fn check_tensors(
    h: &Header,
    total_params: usize,
    file_len: u64,
    bad: &dyn Fn(String) -> Error,
) -> Result<u64> {
    let mut declared = 0u64;
    let mut spans = Vec::with_capacity(h.entries.len());
    for (name, e) in &h.entries {
        let numel = e
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("tensor {name:?} has an absurd shape")))?;
        let span = e.data_offsets[1].checked_sub(e.data_offsets[0]);
        if e.dtype != "F32" || span != numel.checked_mul(4) {
            return Err(bad(format!(
                "tensor {name:?} is not a float32 tensor of its stated shape"
            )));
        }
        declared = declared.saturating_add(numel);
        spans.push(e.data_offsets);
    }
    if declared != total_params as u64 {
        return Err(bad(format!(
            "it holds {declared} weights but its architecture has {total_params}"
        )));
    }
    spans.sort_unstable();
    let mut end = 0;
    for [start, stop] in spans {
        if start != end {
            return Err(bad("its tensors overlap or leave gaps".into()));
        }
        end = stop;
    }
    if 8 + h.len + end != file_len {
        return Err(bad(format!(
            "it is {file_len} bytes long but its header describes {}",
            8 + h.len + end
        )));
    }
    Ok(end)
}

/// Sets the model's variables from the tensors of `data` through
/// [`Model::load_state_dict`], the one loader of weights (names, shapes and
/// finite values checked before anything changes); its refusal becomes a
/// format error that names the file.
fn copy_weights(
    model: &mut Model,
    entries: &HashMap<String, Entry>,
    data: &[u8],
    bad: &dyn Fn(String) -> Error,
) -> Result<()> {
    let decoded: Vec<(String, Vec<usize>, Vec<f32>)> = entries
        .iter()
        .map(|(name, e)| {
            let bytes = &data[e.data_offsets[0] as usize..e.data_offsets[1] as usize];
            let values = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name.clone(), e.shape.clone(), values)
        })
        .collect();
    let view: Vec<(String, Vec<usize>, &[f32])> = decoded
        .iter()
        .map(|(n, shape, v)| (n.clone(), shape.clone(), v.as_slice()))
        .collect();
    model.load_state_dict(&view).map_err(|e| match e {
        Error::InvalidArgument(msg) => bad(msg.trim_start_matches("load_state_dict: ").into()),
        other => other,
    })
}

/// Reads a model written by [`save`] onto `device`, to run in `precision`
/// (None: the precision it was saved with, or float32 where the device
/// cannot run that, e.g. a float16 model on a CPU).
///
/// # Errors
/// `NotFound`/`Io` for unreadable files, `Format` for files that are not
/// complete, consistent cnnrs models.
pub fn load(path: &Path, device: Device, precision: Option<Precision>) -> Result<Model> {
    let bad = |why: String| {
        Error::format(format!(
            "{} is not a valid cnnrs model file: {why}",
            path.display()
        ))
    };
    let (mut file, file_len) = crate::fileio::open_regular(path, "model file")?;
    // 1. The header, with a bounded read; 2. the architecture it describes,
    //    validated as a user's would be, and the tensors that implies, checked
    //    against the header and the file length before anything is allocated.
    let header = read_header(&mut file, file_len, &bad)?;
    let meta = header.meta.clone();
    let plan = arch::plan(&meta.layers, meta.input_shape, meta.num_classes)
        .map_err(|e| bad(e.to_string()))?;
    let normalization = Normalization::new(meta.normalization.mean, meta.normalization.std)
        .map_err(|e| bad(e.to_string()))?;
    if normalization.mean.len() != meta.input_shape[2] {
        return Err(bad(
            "normalisation statistics do not match the channel count".into(),
        ));
    }
    let end = check_tensors(&header, plan.total_params(), file_len, &bad)?;

    // 3. Now the data (its size is known and backed by the file) and the model.
    let mut data = Vec::new();
    data.try_reserve_exact(end as usize)
        .map_err(|_| Error::OutOfMemory(format!("cannot allocate {end} bytes for the weights")))?;
    file.take(end)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    if data.len() as u64 != end {
        return Err(bad("it was truncated while being read".into()));
    }
    let precision = match precision {
        Some(p) => p.resolve(device)?,
        None => meta.precision.resolve(device).unwrap_or(Precision::Fp32),
    };
    // A file's recipe is the one its architecture names, with the file's settings.
    let recipe = match meta.decoupled {
        Some(settings) => {
            let mut r = recipe::named(&meta.architecture).ok_or_else(|| {
                bad(format!(
                    "it names recipe settings but architecture {:?} carries no recipe",
                    meta.architecture
                ))
            })?;
            r.settings = settings;
            Some(r)
        }
        None => None,
    };
    let mut model = Model::new(ModelConfig {
        architecture: meta.architecture,
        layers: meta.layers,
        learning_rate: meta.learning_rate,
        device,
        precision,
        seed: meta.seed,
        optimizer: meta.optimizer,
        label_smoothing: meta.label_smoothing,
        tta: meta.tta,
        recipe,
    })
    .map_err(|e| bad(e.to_string()))?;
    model
        .build(meta.input_shape, meta.num_classes)
        .map_err(|e| bad(e.to_string()))?;
    model.set_normalization(normalization)?;
    copy_weights(&mut model, &header.entries, &data, &bad)?;
    model
        .set_class_names(meta.class_names)
        .map_err(|e| bad(e.to_string()))?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::config::{Architecture, Given};
    use crate::nn::input::{Images, Pixels};
    use crate::nn::train::Silent;
    use crate::nn::tta::Tta;

    #[test]
    fn a_saved_model_predicts_the_same_and_a_corrupt_file_is_refused() {
        let n = 32;
        let x: Vec<u8> = (0..n * 64).map(|i| ((i * 37) % 251) as u8).collect();
        let y: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let images = Images {
            pixels: Pixels::U8(&x),
            shape: [n, 8, 8, 1],
        };
        let config = ModelConfig::resolve(
            Architecture::Named("custom".into()),
            Device::Cpu,
            Given::default(),
        )
        .unwrap();
        let mut m = Model::new(config).unwrap();
        m.fit((images, &y, 2), None, (1, 8, true), &mut Silent)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&m, &path).unwrap();
        let loaded = load(&path, Device::Cpu, None).unwrap();
        let p1 = m.predict(images, 64, Tta::None, &mut Silent).unwrap();
        let p2 = loaded.predict(images, 64, Tta::None, &mut Silent).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(loaded.normalization(), m.normalization());

        std::fs::write(&path, b"not a model").unwrap();
        assert!(matches!(
            load(&path, Device::Cpu, None),
            Err(Error::Format(_))
        ));
    }
}
