//! The one policy for a poisoned lock, shared by every crate.
//!
//! A std `Mutex` is poisoned when a thread panicked while holding it.
//! Every critical section in agentbus is a single map or queue operation
//! that leaves its data consistent even if it stops half way through
//! (an entry inserted or not, a counter bumped or not), so the data is
//! used as it is: the panic is logged where it happened, and the lock
//! goes on serving. Failing instead — skipping the operation, or treating
//! the map as empty — would silently turn off what the lock protects
//! (idempotency, the order of held jekts, rate limits).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Takes `m`, through a poisoning.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| {
        m.clear_poison();
        poisoned.into_inner()
    })
}

/// Waits on `cv` with `guard`, through a poisoning, as [`lock`] does.
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_keeps_its_data_and_serves_on() {
        let m = Arc::new(Mutex::new(HashMap::from([("a", 1)])));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            g.insert("b", 2);
            panic!("a panic while holding the lock");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(lock(&m).len(), 2, "both entries are still there");
        lock(&m).insert("c", 3);
        assert!(!m.is_poisoned(), "the poison is cleared once seen");
        assert_eq!(lock(&m).get("c"), Some(&3));
    }
}
