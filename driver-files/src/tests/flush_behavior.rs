//! `flush_behavior`: which partitions are synced, and when.

use diaspora_api::{json, Metadata, ProducerBackend, ProducerOptions, ThreadPool};

use crate::driver::FlushBehavior;
use crate::producer::FilesProducer;
use crate::topic::{create_topic, TopicShared};

use super::TIMEOUT_MS;

#[test]
fn on_flush_syncs_the_written_partitions_in_flush_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_topic(dir.path(), "t", &json!({"num_partitions": 3})).expect("create");
    for behavior in [
        FlushBehavior::Buffered,
        FlushBehavior::OnFlush,
        FlushBehavior::Immediate,
    ] {
        let shared =
            TopicShared::open_with(dir.path(), "t", ThreadPool::new(1), behavior).expect("open");
        let producer = FilesProducer::new(shared.clone(), ProducerOptions::default());
        let push = |p: usize| {
            let m = Metadata::from_json_str(r#"{"a":1}"#).expect("json");
            producer.push(m, vec![1u8; 8].into(), Some(p))
        };
        let f = push(0);
        let g = push(2);
        f.get().expect("stored");
        g.get().expect("stored");
        let before: Vec<u64> = shared.partitions.iter().map(|p| p.sync_count()).collect();
        assert_eq!(
            before,
            [0, 0, 0],
            "{behavior:?}: nothing synced before flush"
        );
        let mut flushed = producer.flush();
        flushed.wait(TIMEOUT_MS).expect("flush").expect("in time");
        let after: Vec<u64> = shared.partitions.iter().map(|p| p.sync_count()).collect();
        let every = shared.partitions.iter().all(|p| p.syncs_every_append());
        match behavior {
            FlushBehavior::Buffered => assert_eq!((after, every), (vec![0, 0, 0], false)),
            FlushBehavior::OnFlush => {
                assert_eq!((after, every), (vec![1, 0, 1], false), "the written ones")
            }
            FlushBehavior::Immediate => assert_eq!((after, every), (vec![0, 0, 0], true)),
        }
        // A flush with nothing new written syncs nothing more.
        producer.flush().get().expect("flush");
        let again: Vec<u64> = shared.partitions.iter().map(|p| p.sync_count()).collect();
        if behavior == FlushBehavior::OnFlush {
            assert_eq!(again, [1, 0, 1]);
        }
    }
}
