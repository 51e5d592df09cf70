//! airbench's whitening layer, set from the data: the first convolution's
//! filters are the (scaled) eigenvectors of the covariance of the training
//! images' patches, fitted once at the first fit and frozen.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::nn::device::Layout;
use crate::nn::input::DeviceNormalization;
use crate::nn::network::Network;
use crate::nn::torch_ext::with_autocast;

/// How many of the first fit's images the whitening layer is fitted on.
pub const WHITENING_IMAGES: usize = 5000;
/// Added to the eigenvalues before scaling the whitening filters.
pub const WHITENING_EPS: f64 = 5e-4;

/// The whitening convolution's weights from normalised images `x` (N, C, H,
/// W): every `k`×`k` patch (stride 1), their uncentred covariance, its
/// eigenvectors in descending order of eigenvalue scaled by
/// `1 / sqrt(eigenvalue + eps)`, then the same negated: `(2·C·k², C, k, k)`.
/// The same operations, in the same order, as the reference (so the same
/// eigenvector signs from the same LAPACK).
///
/// # Errors
/// libtorch failures.
pub fn whitening_weights(x: &Tensor, k: i64, eps: f64) -> Result<Tensor> {
    let c = x.size()[1];
    let patches = x
        .f_unfold(2, k, 1)?
        .f_unfold(3, k, 1)?
        .f_transpose(1, 3)?
        .f_reshape([-1, c, k, k])?
        .f_to_kind(Kind::Float)?;
    let n = patches.size()[0];
    let flat = patches.f_view([n, -1])?;
    let cov = flat.f_tr()?.f_matmul(&flat)?.f_div_scalar(n as f64)?;
    let (values, vectors) = cov.f_linalg_eigh("U")?;
    let d = c * k * k;
    let values = values.f_flip([0])?.f_view([-1, 1, 1, 1])?;
    let vectors = vectors.f_tr()?.f_reshape([d, c, k, k])?.f_flip([0])?;
    let scaled = vectors.f_div(&values.f_add_scalar(eps)?.f_sqrt()?)?;
    Ok(Tensor::f_cat(&[&scaled, &scaled.f_neg()?], 0)?)
}

/// The setup hook of recipes with a whitening layer: fits its filters on the
/// first [`WHITENING_IMAGES`] of the fit's images (raw, on the device),
/// normalised, in float32 whatever autocast the calling thread has on.
///
/// # Errors
/// libtorch failures.
pub fn fit_whitening(net: &Network, raw: &Tensor, norm: &DeviceNormalization) -> Result<()> {
    let Some((w, _)) = net.whitening() else {
        return Ok(());
    };
    let k = w.size()[2];
    let m = raw.size()[0].min(WHITENING_IMAGES as i64);
    let first = norm.batch(&raw.f_narrow(0, 0, m)?, Layout::Contiguous)?;
    let device = raw.device();
    let weights = tch::no_grad(|| {
        with_autocast(device, None, || whitening_weights(&first, k, WHITENING_EPS))
    })??;
    net.set_whitening(&weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitening_whitens() {
        // Correlated 2-channel images: after whitening, the first half of the
        // filters gives patch features with (near) identity covariance.
        let g = Tensor::randn([64, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
        let x = Tensor::cat(&[&g, &(&g * 0.5 + Tensor::randn_like(&g) * 0.1)], 1);
        let w = whitening_weights(&x, 2, 0.0).unwrap();
        assert_eq!(w.size(), [16, 2, 2, 2]);
        let half = w.narrow(0, 0, 8);
        let y = x.conv2d::<Tensor>(&half, None, [1, 1], [0, 0], [1, 1], 1);
        let f = y.permute([0, 2, 3, 1]).reshape([-1, 8]);
        let cov = f.tr().matmul(&f) / f.size()[0] as f64;
        let eye = Tensor::eye(8, (Kind::Float, tch::Device::Cpu));
        let err = (cov - eye).abs().max().double_value(&[]);
        assert!(err < 1e-3, "{err}");
    }
}
