//! Image operations from scratch: padding, convolution, pooling, image loading.
