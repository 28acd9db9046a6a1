//! [`Losses`]: the events a producer failed to store since its last flush reported them.
//!
//! `flush()` promises that every event pushed since the previous flush is stored, or fails
//! with [`Error::EventsLost`]. A push can fail long before `flush` is called (rejected at once,
//! or its batch failed in the background) and its future may never be looked at: producers
//! record every such failure here, and `flush` takes the record and reports it once.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Count and first reason of the events lost since the last report.
#[derive(Default)]
pub struct Losses {
    state: Mutex<(u64, Option<Arc<Error>>)>,
}

impl Losses {
    /// A new, empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `count` events failed because of `reason` (only the first reason is kept).
    pub fn record(&self, count: u64, reason: Arc<Error>) {
        if count == 0 {
            return;
        }
        let mut st = self.state.lock();
        st.0 = st.0.saturating_add(count);
        st.1.get_or_insert(reason);
    }

    /// Records the failure of one event and returns the error for its future.
    pub fn reject(&self, error: Error) -> Error {
        let error = Arc::new(error);
        self.record(1, error.clone());
        Error::Shared(error)
    }

    /// Takes the record: `None` if nothing was lost since the last call.
    pub fn take(&self) -> Option<(u64, Arc<Error>)> {
        let mut st = self.state.lock();
        let count = std::mem::take(&mut st.0);
        let reason = st.1.take()?;
        (count > 0).then_some((count, reason))
    }

    /// Takes the record as the result of a flush: [`Error::EventsLost`] if anything was lost.
    pub fn take_result(&self) -> Result<()> {
        match self.take() {
            None => Ok(()),
            Some((count, source)) => Err(Error::EventsLost { count, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_add_up_keep_the_first_reason_and_are_reported_once() {
        let l = Losses::new();
        assert!(l.take_result().is_ok());
        l.record(3, Arc::new(Error::Closed("first")));
        let e = l.reject(Error::Closed("second"));
        assert!(matches!(e.root(), Error::Closed("second")));
        l.record(0, Arc::new(Error::Closed("ignored")));
        match l.take_result() {
            Err(Error::EventsLost { count: 4, source }) => {
                assert!(matches!(*source, Error::Closed("first")))
            }
            other => panic!("{other:?}"),
        }
        assert!(l.take().is_none(), "reported once");
    }
}
