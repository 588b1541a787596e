//! Storage conformance: one set of tests, written only against the `Store` trait, run against every
//! backend. Each test is an `async fn name(backend: &Backend)` in one of the modules below; the
//! `conformance!` macro instantiates it as `embedded::name` (redb in a temporary directory, fsync on),
//! `journaled::name` (the same with its write-ahead journal), `memory::name` (the deterministic
//! in-memory store) and `scylla::name` (a fresh keyspace on the CQL stand-in, or on the cluster named
//! by `SCYLLA_NODES`). What one backend guarantees, the others must too: a test that passes on one
//! and fails on another is a bug in the other, not a reason to weaken the test.

mod backend;
mod support;

mod accounts;
mod claims;
mod concurrency;
mod figures;
mod ledger;
mod lifecycle;
mod outbox;
mod paging;
mod rules;

/// `both: [module::test, ...]` run on every backend; `scylla_only: [...]` need several engine
/// processes on shared data, which the embedded and memory stores (one process) cannot have. An
/// entry may carry attributes (`#[ignore = "why"]`).
macro_rules! conformance {
    (
        both: [$($(#[$meta:meta])* $module:ident :: $name:ident),* $(,)?],
        scylla_only: [$($(#[$smeta:meta])* $smodule:ident :: $sname:ident),* $(,)?] $(,)?
    ) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                $(#[$meta])*
                async fn $name() {
                    let backend = crate::backend::Backend::embedded().await;
                    crate::$module::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }

        /// The embedded store with its write-ahead journal, a checkpoint every 4 KiB of it.
        mod journaled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                $(#[$meta])*
                async fn $name() {
                    let backend = crate::backend::Backend::journaled().await;
                    crate::$module::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }

        /// The in-memory store; a reopen is a new handle on the same data.
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                $(#[$meta])*
                async fn $name() {
                    let backend = crate::backend::Backend::memory().await;
                    crate::$module::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }

        mod scylla {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                $(#[$meta])*
                async fn $name() {
                    let backend = crate::backend::Backend::scylla().await;
                    crate::$module::$name(&backend).await;
                    backend.finish().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                $(#[$smeta])*
                async fn $sname() {
                    let backend = crate::backend::Backend::scylla().await;
                    crate::$smodule::$sname(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

conformance! {
    both: [
        accounts::account_is_created_once,
        accounts::stale_account_version_is_refused_and_writes_nothing,
        claims::claims_of_a_refused_commit_go_to_the_next_claimant_for_good,
        claims::receipt_is_claimed_once_and_versioned,
        claims::racing_claimants_leave_the_claim_to_exactly_one,
        claims::two_accounts_racing_for_two_identifiers_leave_both_to_one,
        claims::receipt_of_another_account_is_never_overwritten,
        claims::identity_is_bound_to_one_account,
        claims::released_identity_resolves_to_nothing_and_may_be_claimed_anew,
        claims::enrolment_request_is_claimed_once,
        ledger::ledger_pages_newest_first_and_sums_to_the_balance,
        ledger::commit_with_a_gap_inside_is_refused,
        ledger::commit_leaving_a_gap_after_the_stored_ledger_is_refused,
        ledger::commit_rewriting_a_stored_ledger_entry_is_refused,
        ledger::replay_reads_back_exactly_what_was_written,
        concurrency::concurrent_writers_on_one_store_never_lose_or_invent_points,
        rules::rules_versions_are_written_once_in_sequence,
        rules::concurrent_rules_writers_create_each_version_once,
        figures::figures_move_on_only_from_the_cursor_they_name,
        figures::a_repeated_put_is_answered_as_applied,
        figures::figures_that_do_not_move_forward_are_refused_as_corrupt,
        figures::racing_figures_writers_move_them_on_once_per_cursor,
        figures::figures_of_programs_are_apart,
        figures::figures_survive_a_reopen,
        figures::shutdown_refuses_figures_writes,
        outbox::outbox_carries_events_of_applied_commits_once_in_commit_order,
        outbox::credits_are_kept_until_deleted,
        paging::account_ids_page_through_every_account_once,
        lifecycle::shutdown_refuses_commits_and_writes_nothing,
        lifecycle::shutdown_refuses_rules_and_credit_writes,
        lifecycle::relay_pass_is_harmless,
    ],
    scylla_only: [
        concurrency::concurrent_writers_on_two_instances_never_lose_or_invent_points,
        lifecycle::events_stranded_by_a_crash_are_relayed_by_the_next_commit_in_order,
        lifecycle::relay_pass_recovers_events_of_a_crashed_commit,
        lifecycle::migrating_twice_applies_nothing_and_an_unknown_schema_is_refused,
        lifecycle::a_schema_1_keyspace_is_migrated_with_its_claim_owners,
    ],
}
