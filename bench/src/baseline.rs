//! Baselines measured in the same run: memcpy, an SPSC queue between two
//! threads, the PTE validator in-process, plain memory writes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use crate::procs::thread_cpu;

/// Runs `step` (which does `per_step` units of work) until `budget` has
/// passed (at least once) and returns units per second.
fn rate(budget: Duration, per_step: u64, mut step: impl FnMut()) -> f64 {
    // Warm up (caches, page faults, branch predictors).
    for _ in 0..4 {
        step();
    }
    let start = Instant::now();
    let mut steps = 0u64;
    loop {
        for _ in 0..16 {
            step();
        }
        steps += 16;
        if start.elapsed() >= budget {
            break;
        }
    }
    (steps * per_step) as f64 / start.elapsed().as_secs_f64()
}

/// memcpy bandwidth (bytes/s) for buffers of `size` bytes (hot in cache
/// for small sizes, as the ring's single request buffer is).
pub fn memcpy(size: usize, budget: Duration) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size];
    rate(budget, size as u64, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    })
}

/// What the SPSC baseline measured.
#[derive(Clone, Copy, Debug)]
pub struct SpscResult {
    /// Message size.
    pub size: usize,
    /// Messages moved.
    pub messages: u64,
    /// Messages per second.
    pub per_s: f64,
    /// CPU time of both threads per message (ns).
    pub cpu_ns: f64,
}

impl SpscResult {
    /// Wall time per message (ns).
    pub fn wall_ns(&self) -> f64 {
        1e9 / self.per_s
    }
}

/// Moves `messages` messages of `size` bytes from one thread to another
/// through a crossbeam `bounded(256)` channel: the producer copies each
/// message into a buffer from a pool (one copy per message, as the null
/// device makes), the consumer reads it and hands the buffer back.
pub fn spsc(size: usize, messages: u64) -> SpscResult {
    const SLOTS: usize = 256;
    let (tx, rx) = bounded::<Vec<u8>>(SLOTS);
    let (back_tx, back_rx) = bounded::<Vec<u8>>(SLOTS * 2);
    for _ in 0..SLOTS * 2 {
        // The pool: never more than 2 × SLOTS buffers exist.
        let _ = back_tx.send(vec![0u8; size.max(1)]);
    }
    let consumer = std::thread::spawn(move || {
        let cpu = thread_cpu();
        let mut sum = 0u64;
        while let Ok(buf) = rx.recv() {
            sum = sum.wrapping_add(u64::from(buf[0]) + u64::from(buf[buf.len() - 1]));
            if back_tx.send(buf).is_err() {
                break;
            }
        }
        black_box(sum);
        thread_cpu().saturating_sub(cpu)
    });
    let src: Vec<u8> = (0..size.max(1)).map(|i| i as u8).collect();
    let cpu = thread_cpu();
    let start = Instant::now();
    for _ in 0..messages {
        let Ok(mut buf) = back_rx.recv() else { break };
        buf.copy_from_slice(&src);
        if tx.send(buf).is_err() {
            break;
        }
    }
    drop(tx);
    let consumer_cpu = consumer.join().unwrap_or_default();
    let elapsed = start.elapsed();
    let producer_cpu = thread_cpu().saturating_sub(cpu);
    SpscResult {
        size,
        messages,
        per_s: messages as f64 / elapsed.as_secs_f64(),
        cpu_ns: (producer_cpu + consumer_cpu).as_nanos() as f64 / messages.max(1) as f64,
    }
}

/// Updates per second of pvmm's validator: batches of 512 `mmu_update`
/// requests on one L1 table, alternately mapping 512 frames writable and
/// unmapping them (every update takes or drops a type reference), as the
/// guest's `pv-paging-bench` does through the hypercall.
pub fn pte_validation(budget: Duration) -> Result<f64, String> {
    use pvmm::testing::VecMemory;
    use pvmm::*;
    const FRAMES: u64 = 4096;
    const TABLE: Gfn = Gfn(1);
    const DATA: u64 = 1024;
    let mut ft = FrameTable::new(Config::new(FRAMES, 1)).map_err(|e| e.to_string())?;
    let mut mem = VecMemory::new(FRAMES);
    ft.mmuext_op(&mut mem, 0, &[MmuExtOp::Pin { level: Level::L1, gfn: TABLE }]).result().map_err(|e| e.to_string())?;
    let map: Vec<MmuUpdate> =
        (0..512).map(|i| MmuUpdate::normal(TABLE, i, ((DATA + i as u64) << PAGE_SHIFT) | PTE_P | PTE_US | PTE_A | PTE_RW)).collect();
    let unmap: Vec<MmuUpdate> = (0..512).map(|i| MmuUpdate::normal(TABLE, i, 0)).collect();
    let mut n = 0u64;
    let mut failed = None;
    let per_s = rate(budget, 512, || {
        let reqs = if n % 2 == 0 { &map } else { &unmap };
        n += 1;
        if let Some(e) = black_box(ft.mmu_update(&mut mem, reqs)).error {
            failed = Some(format!("{e:?}"));
        }
    });
    match failed {
        Some(e) => Err(format!("the validator refused the benchmark's own updates: {e}")),
        None => Ok(per_s),
    }
}

/// Plain 8-byte memory writes per second into a 512-entry table (the same
/// values the validator writes, without validation).
pub fn plain_writes(budget: Duration) -> f64 {
    let mut table = vec![0u64; 512];
    let map: Vec<u64> = (0..512u64).map(|i| ((1024 + i) << 12) | 0x27).collect();
    let mut n = 0u64;
    rate(budget, 512, || {
        let odd = n % 2 == 1;
        n += 1;
        for (slot, &v) in table.iter_mut().zip(&map) {
            // SAFETY: `slot` is a valid, aligned &mut u64; volatile so the
            // compiler keeps every store, as a page-table write must be.
            unsafe { std::ptr::write_volatile(slot, if odd { 0 } else { v }) };
        }
        black_box(&mut table);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_give_positive_finite_numbers() {
        let ms = Duration::from_millis(5);
        for v in [memcpy(4096, ms), plain_writes(ms), pte_validation(ms).unwrap()] {
            assert!(v.is_finite() && v > 0.0, "{v}");
        }
        let s = spsc(512, 2000);
        assert_eq!(s.messages, 2000);
        assert!(s.per_s.is_finite() && s.per_s > 0.0 && s.cpu_ns >= 0.0);
    }
}
