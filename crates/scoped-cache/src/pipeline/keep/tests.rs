use std::sync::Arc;
use std::time::Duration;

use super::*;

const EPOCH: Epoch = Epoch {
    local: 3,
    shared: 7,
};

fn lifetimes() -> cache::Lifetimes {
    cache::Lifetimes {
        ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
    }
}

fn decision(learned: &[&str]) -> Decision {
    Decision {
        scope: Vec::new().into(),
        max_age: Duration::from_secs(60),
        stale_while_revalidate: None,
        stale_if_error: None,
        bypass: false,
        learned: learned
            .iter()
            .map(|s| Arc::from(*s))
            .collect::<Vec<_>>()
            .into(),
    }
}

#[test]
fn a_storable_response_is_stored_at_the_epoch_the_execution_began() {
    assert_eq!(
        decide(Ok(lifetimes()), Keep::Store(EPOCH), false, None),
        Ok((lifetimes(), EPOCH))
    );
}

#[test]
fn the_responses_own_verdict_comes_first() {
    for reason in [
        NotStored::GraphqlErrors,
        NotStored::UncoveredClaimRead("/role".into()),
        NotStored::ZeroTtl,
    ] {
        for keep in [Keep::Store(EPOCH), Keep::LearnOnly] {
            assert_eq!(decide(Err(reason.clone()), keep, true, None), Err(reason.clone()));
        }
    }
}

#[test]
fn an_execution_that_only_learns_is_never_stored() {
    assert_eq!(
        decide(Ok(lifetimes()), Keep::LearnOnly, false, None),
        Err(NotStored::Learning)
    );
}

#[test]
fn unreliable_entity_tags_keep_a_response_out() {
    assert_eq!(
        decide(Ok(lifetimes()), Keep::Store(EPOCH), true, None),
        Err(NotStored::UnreliableTags)
    );
}

#[test]
fn a_learned_scope_learns_from_stored_answers_and_uncovered_reads_only() {
    let learned = decision(&["Query.me"]);
    assert!(should_learn(&learned, &Ok(lifetimes())));
    assert!(should_learn(
        &learned,
        &Err(NotStored::UncoveredClaimRead("/sub".into()))
    ));
    assert!(!should_learn(&learned, &Err(NotStored::GraphqlErrors)));
    assert!(!should_learn(&learned, &Err(NotStored::ZeroTtl)));
    // Nothing to learn without a learned scope.
    assert!(!should_learn(&decision(&[]), &Ok(lifetimes())));
}

#[test]
fn an_inner_layers_freshness_bounds_this_ones() {
    let stored = |fresh_for| decide(Ok(lifetimes()), Keep::Store(EPOCH), false, fresh_for);
    let ttl = |fresh_for| stored(fresh_for).map(|(lifetimes, _)| lifetimes.ttl);
    assert_eq!(ttl(Some(Duration::from_secs(10))), Ok(Duration::from_secs(10)));
    assert_eq!(ttl(Some(Duration::from_secs(600))), Ok(Duration::from_secs(60)));
    assert_eq!(ttl(None), Ok(Duration::from_secs(60)));
    assert_eq!(stored(Some(Duration::ZERO)), Err(NotStored::ZeroTtl));
}
