//! Checks that the suite catches bugs: the files driver wrapped in deliberately broken layers
//! (only through the public API) must fail the relevant cases.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use diaspora_api::{
    json, Acknowledger, Consumer, ConsumerBackend, ConsumerOptions, DataView, Driver,
    DriverBackend, Event, EventId, Future, Metadata, PartitionInfo, Producer, ProducerBackend,
    ProducerOptions, Result, TopicBackend, TopicHandle, TopicPolicies, Value,
};
use diaspora_conformance::{ack_resume, data_selection, ordering, DriverFixture};

#[derive(Clone, Copy)]
enum Mutation {
    /// Event 5 of each partition is reported with id 6.
    WrongId,
    /// Data is dropped.
    NoData,
    /// Acknowledgements are ignored.
    NoAck,
}

struct Mutant {
    inner: Driver,
    mutation: Mutation,
}

impl DriverBackend for Mutant {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        self.inner.create_topic(name, options.clone())
    }
    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        let handle = self.inner.open_topic(name)?;
        let policies = TopicPolicies::from_options(&handle.options())?;
        Ok(Arc::new(MutantTopic {
            handle,
            policies,
            mutation: self.mutation,
        }))
    }
    fn topic_exists(&self, name: &str) -> Result<bool> {
        self.inner.topic_exists(name)
    }
    fn list_topics(&self) -> Result<Vec<String>> {
        self.inner.list_topics()
    }
}

struct MutantTopic {
    handle: TopicHandle,
    policies: TopicPolicies,
    mutation: Mutation,
}

impl TopicBackend for MutantTopic {
    fn name(&self) -> &str {
        self.handle.name()
    }
    fn options(&self) -> Value {
        self.handle.options()
    }
    fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        self.handle.partitions()
    }
    fn policies(&self) -> &TopicPolicies {
        &self.policies
    }
    fn producer(&self, name: &str, options: ProducerOptions) -> Result<Arc<dyn ProducerBackend>> {
        Ok(Arc::new(MutantProducer(
            self.handle.producer_with(name, options)?,
        )))
    }
    fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>> {
        Ok(Arc::new(MutantConsumer {
            inner: self.handle.consumer_with(name, options)?,
            mutation: self.mutation,
        }))
    }
    fn mark_as_complete(&self) -> Result<()> {
        self.handle.mark_as_complete()
    }
    fn is_complete(&self) -> Result<bool> {
        self.handle.is_complete()
    }
}

struct MutantProducer(Producer);

impl ProducerBackend for MutantProducer {
    fn push(
        &self,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        match partition {
            Some(p) => self.0.push_to(p, metadata, data),
            None => self.0.push(metadata, data),
        }
    }
    fn flush(&self) -> Future<()> {
        self.0.flush()
    }
}

/// Forwards acknowledgements to the original event (or drops them).
struct Forward {
    original: Event,
    enabled: bool,
}

impl Acknowledger for Forward {
    fn acknowledge(&self, _partition: usize, _id: EventId) -> Result<()> {
        if self.enabled {
            self.original.acknowledge()
        } else {
            Ok(())
        }
    }
}

struct MutantConsumer {
    inner: Consumer,
    mutation: Mutation,
}

impl ConsumerBackend for MutantConsumer {
    fn pull(&self) -> Future<Event> {
        let mutation = self.mutation;
        self.inner.pull().map(move |e: Event| {
            if e.is_no_more_events() {
                return e;
            }
            let (id, partition) = (e.id(), e.partition());
            let (metadata, data) = e.clone().into_parts();
            let (id, data, enabled) = match mutation {
                Mutation::WrongId if id == 5 => (6, data, true),
                Mutation::WrongId => (id, data, true),
                Mutation::NoData => (id, DataView::new(), true),
                Mutation::NoAck => (id, data, false),
            };
            let acker = Arc::new(Forward {
                original: e,
                enabled,
            });
            Event::new(id, partition, metadata, data, acker)
        })
    }
}

struct MutantFixture {
    dir: tempfile::TempDir,
    mutation: Mutation,
}

impl DriverFixture for MutantFixture {
    fn driver(&self) -> Driver {
        diaspora_driver_files::register();
        let inner = Driver::new("files", json!({"root_path": self.dir.path()}))
            .expect("files driver on a temporary directory");
        Driver::from_backend(
            "files-mutant",
            Arc::new(Mutant {
                inner,
                mutation: self.mutation,
            }),
        )
    }
    fn name(&self) -> &str {
        "files-mutant"
    }
}

fn assert_case_fails(mutation: Mutation, case: fn(&dyn DriverFixture), what: &str) {
    let fixture = MutantFixture {
        dir: tempfile::tempdir().expect("temporary directory"),
        mutation,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| case(&fixture)));
    assert!(
        outcome.is_err(),
        "{what}: the case passed on a broken driver"
    );
}

#[test]
fn suite_detects_wrong_ids() {
    assert_case_fails(
        Mutation::WrongId,
        ordering::single_partition_in_order,
        "ordering",
    );
}

#[test]
fn suite_detects_dropped_data() {
    assert_case_fails(
        Mutation::NoData,
        data_selection::sub_view_selection,
        "sub_view",
    );
    assert_case_fails(
        Mutation::NoData,
        data_selection::large_event_round_trip,
        "large",
    );
}

#[test]
fn suite_detects_ignored_acks() {
    assert_case_fails(Mutation::NoAck, ack_resume::resume_after_restart, "resume");
    assert_case_fails(
        Mutation::NoAck,
        ack_resume::acks_are_per_partition,
        "per partition",
    );
}

#[test]
fn unmutated_wrapper_passes() {
    // The wrapper itself is faithful when it changes nothing relevant to the case.
    let fixture = MutantFixture {
        dir: tempfile::tempdir().expect("temporary directory"),
        mutation: Mutation::NoAck,
    };
    data_selection::sub_view_selection(&fixture);
}
