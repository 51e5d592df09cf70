//! What goes into a network: images borrowed from the caller (Keras layout,
//! uint8 or float32), labels, and the per-channel normalisation fitted on the
//! training images.
//!
//! Images are copied to the device once, as they came (uint8 stays uint8, so
//! CIFAR-10 takes a quarter of the memory of float32), in NHWC order; each
//! batch is gathered, converted to float32, normalised and viewed as NCHW
//! there (see [`Normalization::batch`]). An NHWC tensor viewed as NCHW is what
//! libtorch calls channels-last, so no transpose is ever materialised unless the
//! device prefers contiguous NCHW (see [`super::device::Layout`]).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::device::Layout;
use crate::error::{Error, Result};

/// Images in Keras layout (N, H, W, C), borrowed from the caller, contiguous.
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub pixels: Pixels<'a>,
    /// (N, H, W, C)
    pub shape: [usize; 4],
}

impl Images<'_> {
    #[must_use]
    pub fn len(&self) -> usize {
        self.shape[0]
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
    /// (H, W, C)
    #[must_use]
    pub fn image_shape(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    /// Checks the batch is non-empty and its pixels finite; `what` names the
    /// argument in the error.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty batch or a non-finite pixel.
    pub fn validate(&self, what: &str) -> Result<()> {
        let numel: usize = self.shape.iter().product();
        let len = match self.pixels {
            Pixels::U8(p) => p.len(),
            Pixels::F32(p) => {
                if let Some(pos) = p.iter().position(|v| !v.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{what} contains a non-finite value ({}) at flat index {pos}; \
                         images must be finite numbers",
                        p[pos]
                    )));
                }
                p.len()
            }
        };
        assert_eq!(
            len, numel,
            "binding layer passed a buffer of the wrong length"
        );
        if self.shape.contains(&0) {
            return Err(Error::invalid(format!(
                "{what} must be a non-empty batch of images (N, H, W, C), got shape {:?}",
                self.shape
            )));
        }
        Ok(())
    }

    /// The images on `device` as they came: (N, H, W, C), uint8 or float32.
    ///
    /// # Errors
    /// `Torch` when the device cannot hold them (out of memory).
    pub fn to_device(self, device: Device) -> Result<Tensor> {
        let shape = self.shape.map(|d| d as i64);
        let t = match self.pixels {
            Pixels::U8(p) => Tensor::f_from_slice(p)?,
            Pixels::F32(p) => Tensor::f_from_slice(p)?,
        };
        Ok(t.f_to_device(device)?.f_view(shape)?)
    }
}

/// Checks labels against the image count and the class count.
///
/// # Errors
/// `InvalidArgument` naming `what` when they disagree or a label is out of range.
pub fn check_labels(y: &[i64], n: usize, classes: usize, what: &str) -> Result<()> {
    if y.len() != n {
        return Err(Error::invalid(format!(
            "{what}: x has {n} images but y has {} labels; they must be the same length",
            y.len()
        )));
    }
    if let Some(bad) = y
        .iter()
        .find(|&&v| v < 0 || v >= i64::try_from(classes).unwrap_or(i64::MAX))
    {
        return Err(Error::invalid(format!(
            "{what}: label {bad} is out of range; labels must be integers in [0, {classes})"
        )));
    }
    Ok(())
}

/// Per-channel mean and standard deviation, fitted on training images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The smallest standard deviation used: a constant channel is centred, not blown up.
const MIN_STD: f64 = 1e-7;
/// Values per chunk when fitting statistics (bounds the float64 copies: 32 MiB).
const STATS_CHUNK_VALUES: i64 = 1 << 22;

impl Normalization {
    /// Fits the statistics of `x` (N, H, W, C) in float64, chunk by chunk, so
    /// float32 pixels near float32's limit neither overflow nor lose the mean.
    ///
    /// # Errors
    /// `InvalidArgument` if the statistics are not finite; `Torch` on device failures.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let size = x.size();
        let (n, c) = (size[0], size[3]);
        let per_image = (size[1] * size[2] * c).max(1);
        let chunk_images = (STATS_CHUNK_VALUES / per_image).max(1);
        let per_channel = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?)?)
        };
        let mut sum = Tensor::f_zeros([c], (Kind::Double, x.device()))?;
        let mut start = 0;
        while start < n {
            let len = chunk_images.min(n - start);
            let chunk = x.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?;
            sum = sum.f_add(&chunk.f_sum_dim_intlist([0i64, 1, 2].as_slice(), false, None)?)?;
            start += len;
        }
        let count = (n * size[1] * size[2]) as f64;
        let mean = sum.f_div_scalar(count)?;
        let mut sq = Tensor::f_zeros([c], (Kind::Double, x.device()))?;
        start = 0;
        while start < n {
            let len = chunk_images.min(n - start);
            let centred = x
                .f_narrow(0, start, len)?
                .f_to_kind(Kind::Double)?
                .f_sub(&mean)?;
            sq = sq.f_add(&centred.f_square()?.f_sum_dim_intlist(
                [0i64, 1, 2].as_slice(),
                false,
                None,
            )?)?;
            start += len;
        }
        let std = sq.f_div_scalar(count)?.f_sqrt()?;
        let (mean, std) = (per_channel(&mean)?, per_channel(&std)?);
        Normalization::new(
            mean.iter().map(|&v| v as f32).collect(),
            std.iter().map(|&v| v.max(MIN_STD) as f32).collect(),
        )
        .map_err(|_| {
            Error::invalid(
                "the training images' per-channel mean or standard deviation is not a finite \
                 float32 number; scale the images (e.g. to [0, 1] or [0, 255]) before fit",
            )
        })
    }

    /// Statistics from elsewhere (a saved model): finite means, finite
    /// standard deviations > 0.
    ///
    /// # Errors
    /// `InvalidArgument` otherwise.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(Error::invalid(format!(
                "normalisation needs one mean and one std per channel, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if mean.iter().any(|v| !v.is_finite()) || std.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::invalid(
                "normalisation statistics must be finite, with every std > 0",
            ));
        }
        Ok(Normalization { mean, std })
    }

    /// The per-channel (mean, 1/std) as float32 tensors of shape (C,) on `device`.
    ///
    /// # Errors
    /// `Torch` on device failures.
    pub fn on(&self, device: Device) -> Result<DeviceNormalization> {
        let inv: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        Ok(DeviceNormalization {
            mean: Tensor::f_from_slice(&self.mean)?.f_to_device(device)?,
            inv_std: Tensor::f_from_slice(&inv)?.f_to_device(device)?,
        })
    }
}

/// [`Normalization`] resident on a device, made once per fit/evaluate/predict.
pub struct DeviceNormalization {
    mean: Tensor,
    inv_std: Tensor,
}

impl Clone for DeviceNormalization {
    /// Shares the (read-only) statistics tensors.
    fn clone(&self) -> Self {
        DeviceNormalization {
            mean: self.mean.shallow_clone(),
            inv_std: self.inv_std.shallow_clone(),
        }
    }
}

impl DeviceNormalization {
    /// A batch of raw NHWC images (uint8 or float32) as normalised float32
    /// NCHW, laid out as `layout` asks.
    ///
    /// # Errors
    /// `Torch` on device failures.
    pub fn batch(&self, raw: &Tensor, layout: Layout) -> Result<Tensor> {
        let x = raw
            .f_to_kind(Kind::Float)?
            .f_sub(&self.mean)?
            .f_mul(&self.inv_std)?
            .f_permute([0, 3, 1, 2])?;
        Ok(match layout {
            Layout::ChannelsLast => x,
            Layout::Contiguous => x.f_contiguous()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_numpy_style_and_survive_huge_pixels() {
        // Two channels: [0, 2, 4, 6] and [1e38, -1e38, 1e38, -1e38].
        let px: Vec<f32> = vec![0.0, 1e38, 2.0, -1e38, 4.0, 1e38, 6.0, -1e38];
        let x = Images {
            pixels: Pixels::F32(&px),
            shape: [2, 2, 1, 2],
        }
        .to_device(Device::Cpu)
        .unwrap();
        let n = Normalization::fit(&x).unwrap();
        assert!((n.mean[0] - 3.0).abs() < 1e-6);
        assert!((n.std[0] - 5f32.sqrt()).abs() < 1e-6);
        assert_eq!(n.mean[1], 0.0);
        assert!((n.std[1] / 1e38 - 1.0).abs() < 1e-6);
        let b = n
            .on(Device::Cpu)
            .unwrap()
            .batch(&x, Layout::Contiguous)
            .unwrap();
        assert_eq!(b.size(), [2, 2, 2, 1]);
        let v = Vec::<f32>::try_from(b.flatten(0, -1)).unwrap();
        assert!(v.iter().all(|x| x.is_finite() && x.abs() < 2.0), "{v:?}");
    }

    #[test]
    fn bad_statistics_are_refused() {
        assert!(Normalization::new(vec![0.0], vec![0.0]).is_err());
        assert!(Normalization::new(vec![f32::NAN], vec![1.0]).is_err());
        assert!(Normalization::new(vec![0.0, 1.0], vec![1.0]).is_err());
        assert!(Normalization::new(vec![0.0], vec![f32::INFINITY]).is_err());
        assert!(Normalization::new(vec![0.5], vec![2.0]).is_ok());
    }
}
