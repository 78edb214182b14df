//! EDM's choice of images when a folder holds more than `--num`: `training/dataset.py` shuffles
//! `arange(N)` with `np.random.RandomState(seed)` and keeps the first `num`, sorted. Reproducing that
//! needs numpy's legacy generator: MT19937 seeded with `init_genrand(seed)`, and a Fisher–Yates shuffle
//! whose bounded draws use masked rejection sampling on 32-bit outputs (`random_interval`).

/// The Mersenne Twister MT19937 (32-bit), as numpy's `RandomState` uses it.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// Uniform integer in `0..=max` (numpy's `random_interval`).
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        loop {
            let v = if max <= 0xffff_ffff {
                (self.next_u32() as u64) & mask
            } else {
                self.next_u64() & mask
            };
            if v <= max {
                return v;
            }
        }
    }
}

/// `np.random.RandomState(seed).shuffle(arange(n))`.
pub fn numpy_shuffled(n: usize, seed: u32) -> Vec<usize> {
    let mut x: Vec<usize> = (0..n).collect();
    let mut rng = Mt19937::new(seed);
    for i in (1..n).rev() {
        let j = rng.interval(i as u64) as usize;
        x.swap(i, j);
    }
    x
}

/// The indices EDM's `ImageFolderDataset(max_size=num, random_seed=seed)` keeps out of `n` images:
/// all of them when `n <= num`, otherwise a seeded random subset of `num`, in increasing order.
pub fn edm_subset(n: usize, num: usize, seed: u64) -> Vec<usize> {
    if n <= num {
        return (0..n).collect();
    }
    let mut keep = numpy_shuffled(n, (seed % (1 << 31)) as u32);
    keep.truncate(num);
    keep.sort_unstable();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_random_state_shuffle() {
        // np.random.RandomState(0).shuffle(np.arange(100)) → first 20 entries
        let want = [
            26, 86, 2, 55, 75, 93, 16, 73, 54, 95, 53, 92, 78, 13, 7, 30, 22, 24, 33, 8,
        ];
        assert_eq!(&numpy_shuffled(100, 0)[..20], &want);
        // np.random.RandomState(7).shuffle(np.arange(10))
        assert_eq!(numpy_shuffled(10, 7), vec![8, 5, 0, 2, 1, 9, 7, 3, 6, 4]);
    }

    #[test]
    fn subset_of_70000_matches_edm() {
        // np.sort(shuffled(70000, seed 0)[:50000]): first ten, last five, sum
        let s = edm_subset(70_000, 50_000, 0);
        assert_eq!(s.len(), 50_000);
        assert_eq!(&s[..10], &[0, 1, 3, 4, 6, 7, 8, 9, 11, 12]);
        assert_eq!(&s[49_995..], &[69995, 69996, 69997, 69998, 69999]);
        assert_eq!(s.iter().sum::<usize>(), 1_750_871_934);
        assert_eq!(edm_subset(10, 50, 0), (0..10).collect::<Vec<_>>());
    }
}
