//! numpy's legacy `RandomState` stream (MT19937 seeded by `init_genrand`) and
//! its `shuffle`, reproduced bit for bit so our folds equal scikit-learn's.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The Mersenne Twister as `numpy.random.RandomState(seed)` holds it.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    pos: usize,
}

impl Mt19937 {
    /// Seeds like `RandomState(seed)` for an integer seed (`init_genrand`).
    #[must_use]
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            // i < 624, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let i32_ = i as u32;
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i32_);
        }
        Self { state, pos: N }
    }

    fn generate(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next 32-bit output (`genrand_int32`, numpy's `next_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.generate();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `next_uint64` for MT19937: two 32-bit draws, high word first.
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// numpy's `random_interval(max)`: a uniform integer in `0..=max` by masked
    /// rejection, drawing 32 bits while `max` fits in 32 bits.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if let Ok(max32) = u32::try_from(max) {
            // mask <= u32::MAX here, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let mask32 = mask as u32;
            loop {
                let value = self.next_u32() & mask32;
                if value <= max32 {
                    return u64::from(value);
                }
            }
        }
        loop {
            let value = self.next_u64() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `RandomState.shuffle` on a 1-D array: Fisher–Yates from the end.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            // usize fits in u64 and j <= i, so both casts are exact.
            #[allow(clippy::cast_possible_truncation)]
            let j = self.random_interval(i as u64) as usize;
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_match_numpy() {
        // np.random.RandomState(s)._bit_generator.random_raw(3)
        let mut mt = Mt19937::new(5489);
        let got: Vec<u32> = (0..3).map(|_| mt.next_u32()).collect();
        assert_eq!(got, [3_499_211_612, 581_869_302, 3_890_346_734]);
        let mut mt = Mt19937::new(42);
        let got: Vec<u32> = (0..3).map(|_| mt.next_u32()).collect();
        assert_eq!(got, [1_608_637_542, 3_421_126_067, 4_083_286_876]);
    }

    #[test]
    fn shuffle_matches_numpy() {
        // a = np.arange(10); np.random.RandomState(42).shuffle(a)
        let mut a: Vec<usize> = (0..10).collect();
        Mt19937::new(42).shuffle(&mut a);
        assert_eq!(a, [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
    }
}
