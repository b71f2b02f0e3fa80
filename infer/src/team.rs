//! One image's forward pass shared by several threads (the `std` feature; hosts only).
//!
//! Each thread always computes the same share of every hidden layer's outputs, so its share of
//! the weights stays in its own core's cache (784-512-512-10 in f16 is 1.3 MB: more than one
//! core's L2 on many CPUs, half of it fits); the last layer is the caller's alone. The threads
//! meet before each layer, spinning rather than sleeping, since a whole image takes
//! microseconds. Every output is computed by the same kernel
//! in the same order as in [`Model::forward_into`], so the logits are bit-identical to it.

extern crate std;

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::boxed::Box;

use crate::model::{IntegerOutputs, as_bytes};
use crate::{Error, INPUT_SIZE, Model, NUM_CLASSES};

/// A team's two buffers as a [`crate::Buffers`].
struct Pair<'a>((&'a mut [f32], &'a mut [f32]));

impl crate::Buffers for Pair<'_> {
    fn buffers(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut *self.0.0, &mut *self.0.1)
    }
}

/// Runs `work` with a [`Team`] of `threads` threads (the caller's and `threads − 1` helpers,
/// which spin while they wait, so give it no more threads than idle cores).
pub fn with_team<R>(
    model: &Model<'_>,
    threads: usize,
    work: impl FnOnce(&mut Team<'_, '_>) -> R,
) -> R {
    let threads = threads.max(1);
    let shared = Shared::new(model.scratch_width(), threads);
    std::thread::scope(|scope| {
        for member in 1..threads {
            let shared = &shared;
            scope.spawn(move || shared.serve(model, member));
        }
        // Stops the helpers however `work` ends, so the scope can join them.
        let _stop = StopOnDrop(&shared.stop);
        let mut team = Team {
            model,
            shared: &shared,
            meetings: 0,
        };
        work(&mut team)
    })
}

/// The caller's handle on a team of threads (see [`with_team`]).
pub struct Team<'s, 'm> {
    model: &'s Model<'m>,
    shared: &'s Shared,
    /// Meetings this thread has attended (each member counts its own).
    meetings: usize,
}

impl Team<'_, '_> {
    /// Runs the network on one image of [`INPUT_SIZE`] pixels and returns the logits, the same
    /// bits as [`Model::forward_into`].
    pub fn forward(&mut self, image: &[u8]) -> Result<[f32; NUM_CLASSES], Error> {
        if image.len() != INPUT_SIZE {
            return Err(Error::ImageSize { found: image.len() });
        }
        let width = self.shared.width;
        if self.shared.threads == 1 {
            // No one to meet: the model's own pass, in the team's buffers (the same bits).
            // SAFETY: a team of one has no helpers to touch the buffers, and the two are apart.
            let buffers = unsafe {
                (
                    self.shared.write(0, 0..width),
                    self.shared.write(1, 0..width),
                )
            };
            return self.model.forward_into(image, &mut Pair(buffers));
        }
        // SAFETY: the helpers wait for the next meeting and touch no buffer until then.
        let input = unsafe { self.shared.write(0, 0..width) };
        if self.model.file().is_integer() {
            Model::integer_input(image, as_bytes(input));
        } else {
            self.model.normalize_into(image, input);
        }
        self.shared.meet(&mut self.meetings);
        self.shared.layers(self.model, 0, &mut self.meetings);
        let last = self.model.file().layers.len() % 2;
        // SAFETY: the helpers passed the meeting before the last layer, which this thread
        // computed alone, and wait for the next image.
        let output = unsafe { self.shared.read(last, NUM_CLASSES) };
        let mut logits = [0.0; NUM_CLASSES];
        logits.copy_from_slice(output);
        Ok(logits)
    }

    /// The predicted class of one image (see [`crate::model::argmax`]).
    pub fn predict(&mut self, image: &[u8]) -> Result<usize, Error> {
        self.forward(image)
            .map(|logits| crate::model::argmax(&logits))
    }
}

/// What the members share: two activation buffers and the meeting counter.
///
/// The buffers are cells, so that each member can hold a reference to the part it uses, never
/// to the whole buffer: between two meetings every member reads the whole input buffer (shared
/// references) and writes only its own columns of the output buffer (a mutable reference to
/// those alone), so no two references overlap where one of them may write.
struct Shared {
    buffers: [Box<[UnsafeCell<f32>]>; 2],
    /// Values in each buffer.
    width: usize,
    threads: usize,
    /// Arrivals at meetings so far, all members together.
    arrived: OwnLine<AtomicUsize>,
    stop: AtomicBool,
}

/// Keeps a value on cache lines of its own, so spinning on it does not slow reads of its
/// neighbours.
#[repr(align(128))]
struct OwnLine<T>(T);

// SAFETY: the buffers are cells, only written in disjoint ranges between two meetings (through
// references to those ranges alone), and read after the meeting that follows the writes (the
// counter orders them: Release on arrival, Acquire on leaving).
unsafe impl Sync for Shared {}

impl Shared {
    fn new(width: usize, threads: usize) -> Self {
        let buffer = || (0..width).map(|_| UnsafeCell::new(0.0)).collect();
        Self {
            buffers: [buffer(), buffer()],
            width,
            threads,
            arrived: OwnLine(AtomicUsize::new(0)),
            stop: AtomicBool::new(false),
        }
    }

    /// The start of buffer `index` (0 or 1), with the right to write all of it.
    fn start(&self, index: usize) -> *mut f32 {
        UnsafeCell::raw_get(self.buffers[index].as_ptr())
    }

    /// The first `len` values of buffer `index`, to read.
    ///
    /// # Safety
    /// No member may write them until the next meeting.
    unsafe fn read(&self, index: usize, len: usize) -> &[f32] {
        assert!(len <= self.width);
        // SAFETY: in the buffer (checked above); f32 and UnsafeCell<f32> share a layout; no
        // writes by the caller's contract.
        unsafe { core::slice::from_raw_parts(self.start(index), len) }
    }

    /// The first `len` bytes of buffer `index` (a full-integer layer's 8-bit values), to read.
    ///
    /// # Safety
    /// As for [`Self::read`].
    unsafe fn read_bytes(&self, index: usize, len: usize) -> &[u8] {
        assert!(len <= 4 * self.width);
        // SAFETY: as in `read`; u8 has alignment 1 and no invalid values.
        unsafe { core::slice::from_raw_parts(self.start(index).cast::<u8>(), len) }
    }

    /// Values `range` of buffer `index`, to write.
    ///
    /// # Safety
    /// No other member may touch them until the next meeting.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self, index: usize, range: core::ops::Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.width);
        // SAFETY: in the buffer (checked above); no other reference to them by the caller's
        // contract.
        unsafe { core::slice::from_raw_parts_mut(self.start(index).add(range.start), range.len()) }
    }

    /// Bytes `range` of buffer `index` (a full-integer layer's 8-bit outputs), to write.
    ///
    /// # Safety
    /// As for [`Self::write`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn write_bytes(&self, index: usize, range: core::ops::Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= 4 * self.width);
        // SAFETY: as in `write`; u8 has alignment 1 and no invalid values.
        unsafe {
            let start = self.start(index).cast::<u8>().add(range.start);
            core::slice::from_raw_parts_mut(start, range.len())
        }
    }

    /// A helper's life: wait for an image, compute its share of every layer, repeat until told
    /// to stop.
    fn serve(&self, model: &Model<'_>, member: usize) {
        let mut meetings = 0;
        while self.meet(&mut meetings) {
            self.layers(model, member, &mut meetings);
        }
    }

    /// Member `member`'s share of every layer, with a meeting after each but the last: the
    /// last layer (the logits, a few thousand multiply-adds) is the caller's alone, which
    /// saves a meeting (a round trip of a cache line between cores) per image.
    fn layers(&self, model: &Model<'_>, member: usize, meetings: &mut usize) {
        let last = model.file().layers.len() - 1;
        for (index, layer) in model.file().layers.iter().enumerate() {
            let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
            let columns = match (index == last, member) {
                (false, _) => share(d_out, self.threads, member),
                (true, 0) => 0..d_out,
                (true, _) => return,
            };
            if !columns.is_empty() {
                let (input, output) = (index % 2, 1 - index % 2);
                let start = columns.start;
                // Between two meetings, every member reads the input buffer and writes only its
                // own columns of the output buffer, which is the other one.
                if !model.file().is_integer() {
                    // SAFETY: as said above.
                    let (input, output) =
                        unsafe { (self.read(input, d_in), self.write(output, columns)) };
                    model.layer_columns(index, input, start, output);
                } else if index == last {
                    // SAFETY: as said above.
                    let (input, output) =
                        unsafe { (self.read_bytes(input, d_in), self.write(output, columns)) };
                    model.integer_columns(index, input, start, IntegerOutputs::Logits(output));
                } else {
                    // SAFETY: as said above.
                    let (input, output) = unsafe {
                        (
                            self.read_bytes(input, d_in),
                            self.write_bytes(output, columns),
                        )
                    };
                    let out = IntegerOutputs::Activations(output);
                    model.integer_columns(index, input, start, out);
                }
            }
            if index < last {
                self.meet(meetings);
            }
        }
    }

    /// Waits until every member has arrived at this member's next meeting; `false` if the team
    /// was told to stop while waiting.
    fn meet(&self, meetings: &mut usize) -> bool {
        *meetings += 1;
        let everyone = *meetings * self.threads;
        self.arrived.0.fetch_add(1, Ordering::Release);
        let mut spins = 0u32;
        while self.arrived.0.load(Ordering::Acquire) < everyone {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
        true
    }
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The outputs member `member` of `threads` computes in a layer of `d_out`: equal runs of a
/// multiple of 8 (the kernel's block), the last one shorter, possibly none. Even the 10 logits
/// are split (8 + 2): two members share at most one cache line per layer, written once.
fn share(d_out: usize, threads: usize, member: usize) -> core::ops::Range<usize> {
    let run = d_out.div_ceil(threads).next_multiple_of(8);
    let start = (member * run).min(d_out);
    start..(start + run).min(d_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Encoding;
    use crate::{Activation, ModelFileBuf, Normalization, Scratch};
    use std::vec::Vec;

    /// Pseudo-random bytes.
    fn bytes(count: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    /// Small f16 values.
    fn halves(count: usize, seed: u32) -> Vec<u8> {
        bytes(count, seed)
            .iter()
            .flat_map(|&b| half::f16::from_f32((f32::from(b) - 128.0) / 1500.0).to_le_bytes())
            .collect()
    }

    /// 784-200-77-10: f16, int8 and f16 layers, 77 and 10 not multiples of 8, PReLU with
    /// a different α per layer (so each member must apply its own layer's).
    fn mixed_model() -> Vec<u8> {
        let mut alphas = [0.0; crate::format::MAX_LAYERS];
        alphas[..2].copy_from_slice(&[0.1, 0.7]);
        let normalization = Normalization {
            mean: 0.3,
            std: 0.35,
        };
        let mut file = ModelFileBuf::new(Activation::Prelu { alphas }, normalization);
        for (k, w) in [784usize, 200, 77, 10].windows(2).enumerate() {
            let seed = k as u32 * 3;
            let bias = halves(w[1], seed + 1);
            let (encoding, weights, scales) = if k == 1 {
                (
                    Encoding::Int8,
                    bytes(w[0] * w[1], seed),
                    halves(w[1], seed + 2),
                )
            } else {
                (Encoding::F16, halves(w[0] * w[1], seed), Vec::new())
            };
            file.push_bytes(w[0], w[1], encoding, weights, scales, bias)
                .unwrap();
        }
        file.to_vec().unwrap()
    }

    #[test]
    fn a_batch_is_bit_identical_to_one_image_at_a_time() {
        let file = mixed_model();
        let model = Model::from_bytes(&file).unwrap();
        let images: Vec<Vec<u8>> = (0..130).map(|k| bytes(INPUT_SIZE, 300 + k)).collect();
        let mut scratch = Scratch::<784>::new();
        let one_by_one: Vec<[f32; 10]> = images
            .iter()
            .map(|image| model.forward_into(image, &mut scratch).unwrap())
            .collect();
        let bits = |logits: &[[f32; 10]]| {
            logits
                .iter()
                .flat_map(|l| l.map(f32::to_bits))
                .collect::<Vec<_>>()
        };
        for count in [0, 1, 5, 6, 7, 13, 64, 65, 130] {
            let batch: Vec<&[u8]> = images[..count].iter().map(Vec::as_slice).collect();
            let logits = model.forward_batch(&batch).unwrap();
            assert_eq!(bits(&logits), bits(&one_by_one[..count]), "{count} images");
        }
        let short = [0u8; 783];
        let mixed: Vec<&[u8]> = vec![&images[0], &short];
        assert!(matches!(
            model.forward_batch(&mixed),
            Err(crate::Error::ImageSize { found: 783 })
        ));
    }

    /// 784-200-77-10 full-integer, a table on the second hidden layer.
    fn integer_model() -> Vec<u8> {
        let normalization = Normalization {
            mean: 0.3,
            std: 0.35,
        };
        let mut file = ModelFileBuf::new(Activation::Relu, normalization);
        for (k, w) in [784usize, 200, 77, 10].windows(2).enumerate() {
            let seed = k as u32 * 5;
            let q: Vec<i8> = bytes(w[0] * w[1], seed).iter().map(|&b| b as i8).collect();
            let bias: Vec<i32> = (0..w[1] as i32).map(|j| 97 * j - 4000).collect();
            if k == 2 {
                let scales: Vec<f32> = (0..10).map(|j| 0.01 + 0.001 * j as f32).collect();
                file.push_int8_full(w[0], w[1], &q, &bias, None, &scales)
                    .unwrap();
                break;
            }
            let multipliers: Vec<i32> = (0..w[1] as i32).map(|j| (1 << 30) + 4099 * j).collect();
            let shifts: Vec<i8> = (0..w[1]).map(|j| -14 - (j % 3) as i8).collect();
            let table: Vec<u8> = if k == 1 { bytes(256, 77) } else { Vec::new() };
            let requant = crate::RequantBuf::new(3, &multipliers, &shifts, &table);
            file.push_int8_full(w[0], w[1], &q, &bias, Some(requant), &[])
                .unwrap();
        }
        file.to_vec().unwrap()
    }

    #[test]
    fn a_full_integer_model_needs_only_its_bytes_and_its_widest_sums() {
        let file = integer_model();
        let model = Model::from_bytes(&file).unwrap();
        // 784 input bytes are 196 values; the widest layer's 200 sums need 200.
        assert_eq!(model.scratch_width(), 200);
        let image = bytes(INPUT_SIZE, 7);
        let wide = model
            .forward_into(&image, &mut Scratch::<784>::new())
            .unwrap();
        let exact = model
            .forward_into(&image, &mut Scratch::<200>::new())
            .unwrap();
        assert_eq!(exact.map(f32::to_bits), wide.map(f32::to_bits));
        assert!(matches!(
            model.forward_into(&image, &mut Scratch::<199>::new()),
            Err(Error::ScratchTooSmall {
                needed: 200,
                capacity: 199
            })
        ));
    }

    #[test]
    fn a_full_integer_team_and_batch_give_each_image_its_own_logits() {
        let file = integer_model();
        let model = Model::from_bytes(&file).unwrap();
        let images: Vec<Vec<u8>> = (0..13).map(|k| bytes(INPUT_SIZE, 500 + k)).collect();
        let mut scratch = Scratch::<784>::new();
        let one_by_one: Vec<[f32; 10]> = images
            .iter()
            .map(|image| model.forward_into(image, &mut scratch).unwrap())
            .collect();
        let batch: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        assert_eq!(model.forward_batch(&batch).unwrap(), one_by_one);
        for threads in 1..=3 {
            let logits: Vec<[f32; 10]> = with_team(&model, threads, |team| {
                images
                    .iter()
                    .map(|image| team.forward(image).unwrap())
                    .collect()
            });
            assert_eq!(logits, one_by_one, "{threads} threads");
        }
    }

    #[test]
    fn team_logits_are_bit_identical_to_one_thread() {
        let file = mixed_model();
        let model = Model::from_bytes(&file).unwrap();
        // Under Miri (which checks the threads' accesses to the shared buffers, not the
        // numbers) one image is enough, and five take it over half an hour.
        let count = if cfg!(miri) { 1 } else { 5 };
        let images: Vec<Vec<u8>> = (0..count).map(|k| bytes(INPUT_SIZE, 100 + k)).collect();
        let mut scratch = Scratch::<784>::new();
        let expected: Vec<Vec<u32>> = images
            .iter()
            .map(|image| {
                let logits = model.forward_into(image, &mut scratch).unwrap();
                logits.iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        for threads in 1..=4 {
            with_team(&model, threads, |team| {
                for (image, expected) in images.iter().zip(&expected) {
                    let logits = team.forward(image).unwrap();
                    let got: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(&got, expected, "{threads} threads");
                }
            });
        }
    }

    #[test]
    fn team_refuses_a_wrong_image_size_and_goes_on() {
        let file = mixed_model();
        let model = Model::from_bytes(&file).unwrap();
        let image = bytes(INPUT_SIZE, 7);
        let expected = model.predict(&image, &mut Scratch::<784>::new()).unwrap();
        with_team(&model, 2, |team| {
            assert!(matches!(
                team.forward(&image[1..]),
                Err(Error::ImageSize { found: 783 })
            ));
            assert_eq!(team.predict(&image).unwrap(), expected);
        });
    }

    #[test]
    fn shares_cover_every_output_once_in_runs_of_blocks() {
        for d_out in [1, 8, 10, 16, 17, 100, 512, 513] {
            for threads in 1..=5 {
                let shares: Vec<_> = (0..threads).map(|m| share(d_out, threads, m)).collect();
                let mut next = 0;
                for columns in &shares {
                    assert_eq!(columns.start, next, "{d_out} over {threads}: {shares:?}");
                    assert!(columns.start % 8 == 0 || columns.is_empty());
                    next = columns.end;
                }
                assert_eq!(next, d_out, "{d_out} over {threads}: {shares:?}");
            }
        }
    }
}
