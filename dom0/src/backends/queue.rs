//! The loop every queue runs: pop chains, hand them to the device, put them
//! in the used ring, with VIRTIO_RING_F_EVENT_IDX honoured (disable
//! notifications, process, enable, re-check) and a queue the driver broke
//! reported as such instead of served.

use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::chain::Chain;
use super::Mem;

/// What the device did with one chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The chain is done; the device wrote this many bytes into it.
    Used(u32),
    /// The device cannot use the chain now (nothing to put in a receive
    /// buffer): leave it in the available ring and stop.
    Stop,
}

/// A queue the driver made unusable: the device stops serving it until the
/// frontend sets it up again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("the queue is not ready or its rings lie outside guest RAM")]
    Invalid,
    #[error("the driver moved the available index more than the queue size ahead")]
    AvailIndex,
    #[error("the queue's rings cannot be accessed: {0}")]
    Ring(virtio_queue::Error),
}

impl From<virtio_queue::Error> for QueueError {
    fn from(e: virtio_queue::Error) -> QueueError {
        match e {
            virtio_queue::Error::InvalidAvailRingIndex => QueueError::AvailIndex,
            virtio_queue::Error::QueueNotReady => QueueError::Invalid,
            e => QueueError::Ring(e),
        }
    }
}

/// The result of one run over a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Chains put in the used ring.
    pub used: u32,
    /// Whether the driver asked to be notified (signal the call eventfd).
    pub notify: bool,
}

/// Counters shared by a backend and its [`super::RunningBackend`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub notifications: AtomicU64,
    pub dropped: AtomicU64,
    pub broken_queues: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn error(&self) {
        Counters::add(&self.errors, 1);
    }
}

/// Serves `q`: hands every available chain to `handle` and puts the chain
/// in the used ring, until the driver has nothing more or `handle` says
/// [`Step::Stop`].
///
/// A chain whose head index is out of range cannot be put in the used ring;
/// it is skipped (the device sees it as a broken chain and counts it). Everything that makes the queue
/// itself unusable is returned as a [`QueueError`].
pub(crate) fn run(
    q: &mut Queue,
    mem: &Mem,
    mut handle: impl FnMut(Chain<'_>) -> Step,
) -> Result<Outcome, QueueError> {
    if !q.is_valid(mem) {
        return Err(QueueError::Invalid);
    }
    let event_idx = q.event_idx_enabled();
    let mut used = 0u32;
    'outer: loop {
        if event_idx {
            q.disable_notification(mem)?;
        }
        loop {
            let chain = q.iter(mem)?.next();
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            match handle(chain) {
                Step::Used(len) => match q.add_used(mem, head, len) {
                    Ok(()) => used += 1,
                    Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                        // The device has already counted the broken chain.
                        tracing::debug!(head, "dropping a chain whose head index is out of range");
                    }
                    Err(e) => return Err(e.into()),
                },
                Step::Stop => {
                    q.go_to_previous_position();
                    break 'outer;
                }
            }
        }
        if !event_idx || !q.enable_notification(mem)? {
            break;
        }
    }
    let notify = used > 0 && q.needs_notification(mem)?;
    Ok(Outcome { used, notify })
}
