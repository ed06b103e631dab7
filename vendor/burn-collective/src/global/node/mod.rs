pub mod base;
pub mod centralized;
pub mod ring;
pub mod sync;
pub mod tree;
pub mod worker;

/// zhbert patch: the first of a block of tensor transfer ids for one global
/// operation. Upstream started every operation at id 0 (ring) or used 0 and 1
/// (tree, centralized), so the transfers of consecutive all-reduces collided
/// and the second one hung or read the wrong tensor (tracel-ai/burn#4549).
/// Every node makes the same operations in the same order, so their counters
/// agree.
pub(crate) fn first_transfer_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1 << 20, Ordering::Relaxed)
}
