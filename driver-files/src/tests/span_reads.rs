//! How a refill reads data: a dense run of small events with one read, handed out as slices of
//! it (zero copy); large events, or sparse selections, event by event.
//!
//! Observed through where each event's bytes live: slices of one read lie at the events' file
//! offsets relative to each other, while separate reads get separate allocations, which the
//! system allocator never places exactly one event length apart (each heap chunk carries a
//! header, so consecutive chunks are farther apart than the bytes asked for).

use diaspora_api::{
    json, BatchSize, ConsumerBackend, ConsumerOptions, DataSelector, Event, ThreadPool,
};

use super::{settle, topic_with};
use crate::consumer::FilesConsumer;
use crate::topic::TopicShared;

/// Writes `n` events of `size` bytes of data (event i filled with byte i) and reads them all
/// back with `selector`, in refills of 10 events (so that later refills start inside the data
/// file, not at its start).
fn round_trip(n: usize, size: usize, selector: DataSelector) -> Vec<Event> {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic.producer().expect("producer");
    for i in 0..n {
        drop(producer.push(json!({ "i": i }), vec![i as u8; size]));
    }
    settle(producer.flush(), "flush").expect("flush");
    let shared = TopicShared::open(dir.path(), "t", ThreadPool::inline()).expect("open");
    let options = ConsumerOptions {
        data_selector: Some(selector),
        batch_size: BatchSize::Fixed(10),
        ..Default::default()
    };
    let consumer = FilesConsumer::new(shared, "c", options).expect("consumer");
    (0..n)
        .map(|i| {
            let e = settle(consumer.pull(), "pull").expect("event");
            assert_eq!(e.id(), i as u64);
            e
        })
        .collect()
}

/// Address of the first byte of an event's data (one segment).
fn addr(e: &Event) -> usize {
    let segments = e.data().segments();
    assert_eq!(segments.len(), 1, "one segment");
    segments[0].as_ptr() as usize
}

/// Distances between the data of consecutive events of the same refill.
fn strides(events: &[Event]) -> Vec<isize> {
    events
        .chunks(10)
        .flat_map(|refill| {
            refill
                .windows(2)
                .map(|w| addr(&w[1]) as isize - addr(&w[0]) as isize)
        })
        .collect()
}

#[test]
fn small_events_are_slices_of_one_read() {
    let events = round_trip(20, 1000, diaspora_api::select_all());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.data().to_vec(), vec![i as u8; 1000]);
    }
    assert_eq!(
        strides(&events),
        vec![1000; 18],
        "adjacent slices of one buffer"
    );
}

/// Half of each event selected is still dense (half the run): one read, sliced per event.
#[test]
fn half_selected_small_events_are_slices_of_one_read() {
    let first_half: DataSelector =
        std::sync::Arc::new(|_, d| d.sub_view(0, d.size() / 2).expect("sub view"));
    let events = round_trip(20, 1000, first_half);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.data().to_vec(), vec![i as u8; 500]);
    }
    assert_eq!(strides(&events), vec![1000; 18], "slices 1000 bytes apart");
}

/// Events of 64 KiB are read the same way: one read per refill (10 events, 640 KiB).
#[test]
fn large_events_are_slices_of_one_read_too() {
    let size = 64 << 10;
    let events = round_trip(20, size, diaspora_api::select_all());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.data().to_vec(), vec![i as u8; size]);
    }
    assert_eq!(strides(&events), vec![size as isize; 18]);
}

/// A sparse selection (a tenth of each event) is read piece by piece, not as the whole run.
#[test]
fn sparse_selections_are_read_one_by_one() {
    let tenth: DataSelector =
        std::sync::Arc::new(|_, d| d.sub_view(0, d.size() / 10).expect("sub view"));
    let events = round_trip(20, 1000, tenth);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.data().to_vec(), vec![i as u8; 100]);
    }
    for s in strides(&events) {
        assert_ne!(s, 1000, "not slices of one read");
    }
}
