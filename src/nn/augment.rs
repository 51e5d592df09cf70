//! Data augmentation on whole batches on the device: random flips, random
//! crops of a padded image, random translations and cutout. Every draw comes
//! from the model's own generator; nothing goes through the host.
//!
//! Batches are NCHW (logical; the memory may be channels-last) and already
//! normalised, so "zeros" are the training images' mean, as when Keras's
//! preprocessing layers sit after a `Normalization` layer.

use tch::{Kind, Tensor};

use super::arch::{FlipMode, Layer, Placement};
use super::torch_ext::Generator;
use crate::error::Result;

/// One augmentation, ready to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Augment {
    Flip {
        horizontal: bool,
        vertical: bool,
    },
    Crop {
        pad: i64,
        reflect: bool,
    },
    Translate {
        fraction: f64,
    },
    /// `inside`: the square lies wholly in the image (else centred anywhere).
    Cutout {
        size: i64,
        inside: bool,
    },
}

impl Augment {
    /// The augmentation a layer spec describes, if it is one.
    #[must_use]
    pub fn from_layer(layer: &Layer) -> Option<Self> {
        Some(match *layer {
            Layer::RandomFlip { mode } => Augment::Flip {
                horizontal: mode != FlipMode::Vertical,
                vertical: mode != FlipMode::Horizontal,
            },
            Layer::RandomCrop { pad, fill } => Augment::Crop {
                pad: pad as i64,
                reflect: fill == super::arch::Fill::Reflect,
            },
            Layer::RandomTranslation { fraction } => Augment::Translate { fraction },
            Layer::Cutout { size, placement } => Augment::Cutout {
                size: size as i64,
                inside: placement == Placement::Inside,
            },
            _ => return None,
        })
    }

    /// Applies the augmentation to the batch `x` (N, C, H, W).
    ///
    /// # Errors
    /// libtorch failures.
    pub fn apply(self, x: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        match self {
            Augment::Flip {
                horizontal,
                vertical,
            } => {
                let mut x = x.shallow_clone();
                if horizontal {
                    x = flip_some(&x, 3, gen)?;
                }
                if vertical {
                    x = flip_some(&x, 2, gen)?;
                }
                Ok(x)
            }
            Augment::Crop { pad, reflect } => crop(x, pad, pad, reflect, gen),
            Augment::Translate { fraction } => {
                let size = x.size();
                let dy = (fraction * size[2] as f64).round() as i64;
                let dx = (fraction * size[3] as f64).round() as i64;
                crop(x, dy, dx, false, gen)
            }
            Augment::Cutout { size, inside } => cutout(x, size, inside, gen),
        }
    }
}

/// Mirrors each image along `dim` with probability 1/2.
fn flip_some(x: &Tensor, dim: i64, gen: &mut Generator) -> Result<Tensor> {
    let n = x.size()[0];
    let mask = gen
        .bernoulli(0.5, &[n, 1, 1, 1])?
        .f_to_device(x.device())?
        .f_to_kind(Kind::Bool)?;
    // where(mask, flipped, x)
    Ok(x.f_flip([dim])?.f_where_self(&mask, x)?)
}

/// Pads by (py, px) and cuts each image back to its size at an offset drawn
/// uniformly from [0, 2py] × [0, 2px]: output pixel (r, c) of image n is input
/// pixel (r + oy − py, c + ox − px), reflected at the borders (the edge pixel
/// not repeated, as `F.pad(mode="reflect")`) or zero outside them.
///
/// Done as one row gather on the NHWC view, so a channels-last batch stays
/// channels-last (padding then gathering along H and W would give the next
/// convolution a contiguous NCHW batch, and cost twice the time).
fn crop(x: &Tensor, py: i64, px: i64, reflect: bool, gen: &mut Generator) -> Result<Tensor> {
    if py == 0 && px == 0 {
        return Ok(x.shallow_clone());
    }
    let size = x.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    let device = x.device();
    let oy = gen.randint(0, 2 * py + 1, &[n, 1])?.f_to_device(device)?;
    let ox = gen.randint(0, 2 * px + 1, &[n, 1])?.f_to_device(device)?;
    // Source row/column of every output row/column: (n, h) and (n, w).
    let source = |offset: &Tensor, pad: i64, len: i64| -> Result<(Tensor, Option<Tensor>)> {
        let i = Tensor::f_arange(len, (Kind::Int64, device))?
            .f_unsqueeze(0)?
            .f_add(offset)?
            .f_sub_scalar(pad)?;
        if reflect {
            let i = i.f_abs()?;
            let beyond = i.f_ge(len)?;
            let mirrored = i.f_neg()?.f_add_scalar(2 * (len - 1))?;
            return Ok((mirrored.f_where_self(&beyond, &i)?, None));
        }
        let inside = i.f_ge(0)?.f_logical_and(&i.f_lt(len)?)?;
        Ok((i.f_clamp(0, len - 1)?, Some(inside)))
    };
    let (rows, rows_in) = source(&oy, py, h)?;
    let (cols, cols_in) = source(&ox, px, w)?;
    let images = Tensor::f_arange(n, (Kind::Int64, device))?.f_view([n, 1, 1])?;
    let flat = images
        .f_mul_scalar(h)?
        .f_add(&rows.f_view([n, h, 1])?)?
        .f_mul_scalar(w)?
        .f_add(&cols.f_view([n, 1, w])?)?
        .f_reshape([-1])?;
    let nhwc = x.f_permute([0, 2, 3, 1])?.f_reshape([-1, c])?;
    let mut out = nhwc.f_index_select(0, &flat)?.f_view([n, h, w, c])?;
    if let (Some(r), Some(cl)) = (rows_in, cols_in) {
        let inside = r
            .f_view([n, h, 1, 1])?
            .f_logical_and(&cl.f_view([n, 1, w, 1])?)?;
        out = out.f_mul(&inside.f_to_kind(out.kind())?)?;
    }
    Ok(out.f_permute([0, 3, 1, 2])?)
}

/// Zeroes one `size`×`size` square per image: centred anywhere in the image
/// (clipped at the borders), or when `inside` wholly in it, its top-left
/// corner uniform in [0, h − size] × [0, w − size] (airbench's
/// `make_random_square_masks`; the plan checks the image is large enough).
fn cutout(x: &Tensor, size: i64, inside: bool, gen: &mut Generator) -> Result<Tensor> {
    let s = x.size();
    let (n, h, w) = (s[0], s[2], s[3]);
    let device = x.device();
    // The first row (column) of each square: the centre less size / 2, or the corner.
    let (lo_y, lo_x) = if inside {
        (
            gen.randint(0, h - size + 1, &[n, 1])?,
            gen.randint(0, w - size + 1, &[n, 1])?,
        )
    } else {
        (
            gen.randint(0, h, &[n, 1])?.f_sub_scalar(size / 2)?,
            gen.randint(0, w, &[n, 1])?.f_sub_scalar(size / 2)?,
        )
    };
    let covered = |lo: &Tensor, len: i64| -> Result<Tensor> {
        let lo = lo.f_to_device(device)?;
        let r = Tensor::f_arange(len, (Kind::Int64, device))?.f_unsqueeze(0)?;
        Ok(r.f_ge_tensor(&lo)?
            .f_logical_and(&r.f_lt_tensor(&lo.f_add_scalar(size)?)?)?)
    };
    let rows = covered(&lo_y, h)?.f_view([n, 1, h, 1])?;
    let cols = covered(&lo_x, w)?.f_view([n, 1, 1, w])?;
    let keep = rows.f_logical_and(&cols)?.f_logical_not()?;
    Ok(x.f_mul(&keep.f_to_kind(x.kind())?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        Tensor::f_arange(2 * 3 * 5 * 7, (Kind::Float, Device::Cpu))
            .unwrap()
            .view([2, 3, 5, 7])
            .f_add_scalar(1.0)
            .unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    /// A channels-last batch stays channels-last through every augmentation,
    /// so the convolution after it gets the layout its weights have.
    #[test]
    fn channels_last_batches_stay_channels_last() {
        let x = batch()
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2]);
        let cl = x.stride();
        let mut gen = Generator::new(Device::Cpu, 2).unwrap();
        for aug in [
            Augment::Flip {
                horizontal: true,
                vertical: true,
            },
            Augment::Crop {
                pad: 2,
                reflect: true,
            },
            Augment::Crop {
                pad: 3,
                reflect: false,
            },
            Augment::Translate { fraction: 0.2 },
            Augment::Cutout {
                size: 2,
                inside: false,
            },
            Augment::Cutout {
                size: 2,
                inside: true,
            },
        ] {
            let y = aug.apply(&x, &mut gen).unwrap();
            assert_eq!(y.size(), x.size(), "{aug:?}");
            assert_eq!(y.stride(), cl, "{aug:?}");
        }
    }

    #[test]
    fn flips_mirror_whole_images_or_leave_them() {
        let x = batch();
        let mut gen = Generator::new(Device::Cpu, 1).unwrap();
        let mut flipped = 0;
        for _ in 0..20 {
            let y = Augment::Flip {
                horizontal: true,
                vertical: false,
            }
            .apply(&x, &mut gen)
            .unwrap();
            for i in 0..2 {
                let (xi, yi) = (x.get(i), y.get(i));
                let same = values(&yi) == values(&xi);
                let mirrored = values(&yi) == values(&xi.flip([2]));
                assert!(same ^ mirrored);
                flipped += usize::from(mirrored);
            }
        }
        assert!((5..=35).contains(&flipped), "{flipped} of 40 flipped");
    }

    #[test]
    fn every_crop_is_a_window_of_the_padded_image() {
        let x = batch();
        let mut gen = Generator::new(Device::Cpu, 2).unwrap();
        for reflect in [false, true] {
            let padded = if reflect {
                x.reflection_pad2d([2, 2, 2, 2])
            } else {
                x.constant_pad_nd([2, 2, 2, 2])
            };
            let mut offsets = std::collections::HashSet::new();
            for _ in 0..30 {
                let y = Augment::Crop { pad: 2, reflect }
                    .apply(&x, &mut gen)
                    .unwrap();
                assert_eq!(y.size(), x.size());
                for i in 0..2 {
                    let yi = values(&y.get(i));
                    let found =
                        (0..=4)
                            .flat_map(|oy| (0..=4).map(move |ox| (oy, ox)))
                            .find(|&(oy, ox)| {
                                values(&padded.get(i).narrow(1, oy, 5).narrow(2, ox, 7)) == yi
                            });
                    offsets.insert(found.expect("a window of the padded image"));
                }
            }
            assert!(offsets.len() > 5, "offsets drawn: {offsets:?}");
        }
    }

    #[test]
    fn cutout_zeroes_exactly_one_clipped_square() {
        let x = batch();
        let mut gen = Generator::new(Device::Cpu, 3).unwrap();
        for _ in 0..20 {
            let y = Augment::Cutout {
                size: 2,
                inside: false,
            }
            .apply(&x, &mut gen)
            .unwrap();
            for i in 0..2 {
                // The same pixels are zero in every channel; they form a rectangle
                // of at most 2×2 (clipped at a border), at least 1×1.
                let zero = y.get(i).eq(0.0).all_dim(0, false);
                let idx = Vec::<i64>::try_from(zero.nonzero().flatten(0, -1)).unwrap();
                let cells: Vec<(i64, i64)> = idx.chunks(2).map(|p| (p[0], p[1])).collect();
                assert!((1..=4).contains(&cells.len()), "{cells:?}");
                let rows: std::collections::BTreeSet<_> = cells.iter().map(|c| c.0).collect();
                let cols: std::collections::BTreeSet<_> = cells.iter().map(|c| c.1).collect();
                assert_eq!(rows.len() * cols.len(), cells.len(), "{cells:?}");
                let kept = y.get(i).ne(0.0).sum(Kind::Int64).int64_value(&[]);
                assert_eq!(kept, 3 * 35 - 3 * cells.len() as i64);
            }
        }
    }

    /// airbench's cutout: every mask is one whole `size`×`size` square inside
    /// the image (every channel alike), its top-left corner uniform over the
    /// (h − size + 1) × (w − size + 1) places it fits.
    #[test]
    fn cutout_inside_zeroes_one_whole_square_at_a_uniform_corner() {
        let (n, h, w, size) = (6000i64, 7i64, 8i64, 3i64);
        // No zero pixel before the cutout.
        let x = Tensor::f_ones([n, 2, h, w], (Kind::Float, Device::Cpu)).unwrap();
        let mut gen = Generator::new(Device::Cpu, 6).unwrap();
        let y = Augment::Cutout { size, inside: true }
            .apply(&x, &mut gen)
            .unwrap();
        let y = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap();
        let (w, size) = (w as usize, size as usize);
        let (plane, ny, nx) = (h as usize * w, h as usize - size + 1, w - size + 1);
        let mut counts = vec![vec![0usize; nx]; ny];
        for img in y.chunks(2 * plane) {
            let (first, second) = img.split_at(plane);
            assert_eq!(first, second, "both channels masked alike");
            let zeros: Vec<usize> = (0..plane).filter(|&p| first[p] == 0.0).collect();
            assert_eq!(zeros.len(), size * size, "a whole square, never clipped");
            let (top, left) = (zeros[0] / w, zeros[0] % w);
            assert!(
                top < ny && left < nx,
                "corner ({top}, {left}) leaves the image"
            );
            let square =
                (top..top + size).flat_map(|r| (left..left + size).map(move |c| r * w + c));
            assert!(
                square.eq(zeros.iter().copied()),
                "not a square at ({top}, {left})"
            );
            counts[top][left] += 1;
        }
        // 5 × 6 corners: 200 expected each, binomial sd ≈ 14; 5 sd either side.
        assert!(
            counts.iter().flatten().all(|c| (130..=270).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn translation_shifts_by_whole_pixels_within_the_fraction() {
        let x = batch();
        let mut gen = Generator::new(Device::Cpu, 4).unwrap();
        let y = Augment::Translate { fraction: 0.2 }
            .apply(&x, &mut gen)
            .unwrap();
        // 0.2 of 5 rows and 7 columns: shifts of at most 1 pixel each way.
        let padded = x.constant_pad_nd([1, 1, 1, 1]);
        for i in 0..2 {
            let yi = values(&y.get(i));
            assert!((0..=2).any(|oy| (0..=2)
                .any(|ox| values(&padded.get(i).narrow(1, oy, 5).narrow(2, ox, 7)) == yi)));
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_augmentation() {
        let x = batch();
        let aug = Augment::Crop {
            pad: 3,
            reflect: false,
        };
        let a = aug
            .apply(&x, &mut Generator::new(Device::Cpu, 9).unwrap())
            .unwrap();
        let b = aug
            .apply(&x, &mut Generator::new(Device::Cpu, 9).unwrap())
            .unwrap();
        assert_eq!(values(&a), values(&b));
    }
}
