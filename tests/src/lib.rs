//! Driver-agnostic conformance suite for the Diaspora Stream API.
//!
//! Every driver (files, network, Kafka...) must behave the same through the user-facing API.
//! This crate holds the cases, one `pub fn` per case taking a [`DriverFixture`], grouped by
//! concept in modules. A driver crate runs all of them with one line in an integration test:
//!
//! ```ignore
//! struct MyFixture { /* isolated storage */ }
//! impl diaspora_conformance::DriverFixture for MyFixture { /* ... */ }
//! diaspora_conformance::conformance_tests!(MyFixture::new());
//! ```
//!
//! The fixture expression is evaluated once per test, so each case gets fresh, isolated
//! storage; inside a case, [`DriverFixture::driver`] may be called several times to get
//! independent driver instances on that same storage (used to simulate restarts).
//!
//! Cases assert exact ids, contents and counts. Waits are bounded (see [`util::TIMEOUT_MS`])
//! so a misbehaving driver fails a case instead of hanging the suite.

use diaspora_api::Driver;

pub mod ack_resume;
pub mod bad_input;
pub mod batching;
pub mod completion;
pub mod concurrency;
pub mod data_selection;
pub mod examples;
pub mod ordering;
pub mod parity;
pub mod partitions;
pub mod push_many;
pub mod timeouts;
pub mod topics;
pub mod util;

/// What a driver provides to run the suite.
pub trait DriverFixture {
    /// A fresh driver instance on this fixture's storage. Two calls return independent
    /// instances (no shared in-memory state) that see the same topics: dropping every object of
    /// one instance and calling `driver()` again simulates a process restart.
    fn driver(&self) -> Driver;

    /// Name of the driver under test (used in messages).
    fn name(&self) -> &str;
}

/// Expands to one `#[test]` per conformance case, each calling the case with a fresh fixture
/// built by evaluating `$fixture` (an expression whose type implements [`DriverFixture`]).
///
/// Tests are generated in modules named after the case modules (`ordering::...`), and those
/// modules `use super::*`, so the fixture expression may use any name visible where the macro
/// is invoked.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::__conformance_cases! { ($fixture)
            ordering {
                single_partition_in_order,
                sequential_producers_append,
                producer_appends_after_restart,
                dropping_producer_flushes,
            }
            partitions {
                round_robin_over_four_partitions,
                push_to_is_honoured,
                consumer_partition_subset,
                partition_list_matches_options,
                consumer_serves_partitions_round_robin,
                consumer_drains_a_lone_busy_partition,
                consumer_partition_list_is_checked,
            }
            ack_resume {
                resume_after_restart,
                resume_on_same_driver_instance,
                other_name_starts_at_zero,
                no_ack_restarts_from_zero,
                latest_ack_wins,
                acks_are_per_partition,
            }
            data_selection {
                default_consumer_gets_metadata_only,
                select_all_returns_everything,
                sub_view_selection,
                strided_view_selection,
                unstructured_view_selection,
                composed_view_selection,
                null_selection_and_metadata_driven_selector,
                custom_allocator_receives_data,
                multi_segment_push_reads_back_concatenated,
                empty_data_with_select_all,
                large_event_round_trip,
                custom_allocator_receives_multi_segment_selections,
            }
            completion {
                end_marker_after_all_events,
                completion_persists_across_restart,
                complete_empty_topic,
                push_after_complete_fails,
                acked_consumer_on_complete_topic_gets_end,
            }
            timeouts {
                pull_timeout_then_retry_succeeds,
                wait_zero_on_empty_topic,
                future_is_consumed_once,
                pending_pull_becomes_ready,
            }
            concurrency {
                concurrent_producers,
                shared_producer_across_threads,
                producer_and_consumer_concurrently,
                independent_consumers_concurrently,
            }
            batching {
                producer_option_matrix,
                consumer_option_matrix,
                producer_options_from_json,
                flush_resolves_push_futures_single_partition,
                flush_resolves_push_futures_per_partition,
                flush_waits_for_every_batch_beyond_64,
                full_fixed_batch_is_stored_without_flush,
            }
            push_many {
                ids_follow_push_order_across_batches,
                partitions_of_events_pushed_together,
                one_invalid_event_refuses_the_whole_call,
                push_many_to_a_missing_partition_fails,
                waiting_on_push_many_sends_its_batches,
            }
            bad_input {
                malformed_json_metadata,
                unparseable_metadata_is_refused,
                validator_rejects_and_persists,
                unknown_driver,
                invalid_topic_names,
                missing_topic,
                existing_topic,
                invalid_topic_options,
                invalid_consumer_names,
                push_to_out_of_range_partition,
                consumer_partitions_out_of_range,
                bad_producer_options_json,
                degenerate_producer_options,
                allocator_of_wrong_size,
            }
            topics {
                create_list_and_exists,
                topics_visible_from_other_instance,
                unknown_topic_option_rejected_or_kept,
            }
            parity {
                consumer_iteration_ends_at_end_of_stream,
                process_counts_and_stops,
                buffer_allocator_receives_selected_bytes,
                list_topics_metadata_describes_each_topic,
                clamped_sub_view_selects_the_tail,
                json_schema_topic_validates_after_restart,
                introspection_reports_options,
            }
            examples {
                seed_producer_and_consumer,
                seed_python_producer_waits_each_future,
            }
        }
    };
}

/// Implementation detail of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (($fixture:expr) $($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            #[allow(unused_imports)]
            mod $module {
                use super::*;
                $(
                    #[test]
                    fn $case() {
                        let fixture = $fixture;
                        $crate::$module::$case(&fixture);
                    }
                )*
            }
        )*
    };
}
