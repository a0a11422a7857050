//! The outbox contract, run against every store, and sinks the tests steer.
#![allow(dead_code)]

use outbox::{
    ChannelSink, Event, EventState, Outbox, Outcome, PublishError, Relay, Schedule, Settlement,
    Sink,
};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

pub fn event(id: &str, aggregate: Option<&str>) -> Event {
    let e = Event::new("orders", id, format!("{{\"id\":\"{id}\"}}")).unwrap();
    match aggregate {
        Some(a) => e.aggregate(a).unwrap(),
        None => e,
    }
}

fn ids(claimed: &[outbox::Claimed]) -> Vec<String> {
    let mut ids: Vec<String> = claimed.iter().map(|c| c.event.id.clone()).collect();
    ids.sort();
    ids
}

fn settle(claimed: &outbox::Claimed, outcome: Outcome) -> Settlement<'_> {
    Settlement::new(claimed, outcome)
}

/// Every store passes this: `advance` moves the store's clock forward.
pub async fn contract(o: &impl Outbox, advance: &dyn Fn(Duration)) {
    duplicates_and_leases(o, advance).await;
    aggregate_order(o).await;
    dead_letters_and_replay(o).await;
    backoff_and_delay(o, advance).await;
    stats_and_purge(o, advance).await;
    gone_pauses_its_topic_and_attempts_are_recorded(o).await;
}

async fn duplicates_and_leases(o: &impl Outbox, advance: &dyn Fn(Duration)) {
    assert!(o.enqueue(&event("a1", None)).await.unwrap());
    assert!(
        !o.enqueue(&event("a1", None)).await.unwrap(),
        "a (topic, id) is queued once"
    );
    let first = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&first), ["a1"]);
    assert_eq!(first[0].attempts, 0);
    assert!(
        o.claim(10, LEASE).await.unwrap().is_empty(),
        "held by its lease"
    );
    advance(LEASE + Duration::from_secs(1));
    let second = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&second), ["a1"], "due again once the lease ran out");
    assert_ne!(first[0].claim, second[0].claim);
    let stale = o
        .settle(&[settle(&first[0], Outcome::Published)])
        .await
        .unwrap();
    assert_eq!(stale, 0, "the old claim settles nothing");
    let fresh = o
        .settle(&[settle(&second[0], Outcome::Published)])
        .await
        .unwrap();
    assert_eq!(fresh, 1);
    let status = o.status("orders", "a1").await.unwrap().unwrap();
    assert_eq!((status.state, status.attempts), (EventState::Published, 1));
    assert!(o.status("orders", "nope").await.unwrap().is_none());
}

async fn aggregate_order(o: &impl Outbox) {
    for (id, agg) in [
        ("b1", Some("ord_b")),
        ("b2", Some("ord_b")),
        ("c1", Some("ord_c")),
    ] {
        o.enqueue(&event(id, agg)).await.unwrap();
    }
    o.enqueue(&event("n1", None)).await.unwrap();
    let round = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&round), ["b1", "c1", "n1"], "b2 waits for b1");
    assert!(
        o.claim(10, LEASE).await.unwrap().is_empty(),
        "b2 waits while b1 is held"
    );
    let b1 = round.iter().find(|c| c.event.id == "b1").unwrap();
    let failed = Outcome::RetryIn(Duration::ZERO, "no ack".into());
    o.settle(&[settle(b1, failed)]).await.unwrap();
    let again = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&again), ["b1"], "a failed b1 goes again before b2");
    let settled = round
        .iter()
        .filter(|c| c.event.id != "b1")
        .chain(&again)
        .map(|c| settle(c, Outcome::Published))
        .collect::<Vec<_>>();
    assert_eq!(
        o.settle(&settled).await.unwrap(),
        3,
        "one statement settles a batch"
    );
    let b2 = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&b2), ["b2"]);
    o.settle(&[settle(&b2[0], Outcome::Published)])
        .await
        .unwrap();
}

async fn dead_letters_and_replay(o: &impl Outbox) {
    o.enqueue(&event("d1", Some("ord_d"))).await.unwrap();
    o.enqueue(&event("d2", Some("ord_d"))).await.unwrap();
    let d1 = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&d1), ["d1"]);
    o.settle(&[settle(&d1[0], Outcome::Dead("too large".into()))])
        .await
        .unwrap();
    let dead = o.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("d1", 1));
    assert_eq!(dead[0].last_error.as_deref(), Some("too large"));
    let d2 = o.claim(10, LEASE).await.unwrap();
    assert_eq!(
        ids(&d2),
        ["d2"],
        "a dead letter lets its aggregate's next event go"
    );
    o.settle(&[settle(&d2[0], Outcome::Published)])
        .await
        .unwrap();
    assert!(
        !o.replay("orders", "d2").await.unwrap(),
        "only dead letters replay"
    );
    assert!(o.replay("orders", "d1").await.unwrap());
    let replayed = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&replayed), ["d1"]);
    assert_eq!(replayed[0].attempts, 0, "a replay starts the schedule over");
    o.settle(&[settle(&replayed[0], Outcome::Dead("again".into()))])
        .await
        .unwrap();
    assert_eq!(o.replay_dead(Some("other")).await.unwrap(), 0);
    assert_eq!(o.replay_dead(None).await.unwrap(), 1);
    let last = o.claim(10, LEASE).await.unwrap();
    o.settle(&[settle(&last[0], Outcome::Published)])
        .await
        .unwrap();
    assert!(o.dead_letters(10).await.unwrap().is_empty());
}

async fn backoff_and_delay(o: &impl Outbox, advance: &dyn Fn(Duration)) {
    o.enqueue(&event("e1", None)).await.unwrap();
    o.enqueue(&event("late", None).delay(Duration::from_secs(60)))
        .await
        .unwrap();
    let e1 = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&e1), ["e1"], "a delayed event waits for its time");
    let retry = Outcome::RetryIn(Duration::from_secs(5), "nack".into());
    o.settle(&[settle(&e1[0], retry)]).await.unwrap();
    assert!(o.claim(10, LEASE).await.unwrap().is_empty(), "backing off");
    let status = o.status("orders", "e1").await.unwrap().unwrap();
    assert_eq!(status.last_error.as_deref(), Some("nack"));
    advance(Duration::from_secs(6));
    let e1 = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&e1), ["e1"]);
    assert_eq!(e1[0].attempts, 1);
    o.settle(&[settle(&e1[0], Outcome::Published)])
        .await
        .unwrap();
    advance(Duration::from_secs(60));
    let late = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&late), ["late"]);
    assert!(
        late[0].age >= Duration::from_secs(60),
        "age counts from the enqueue"
    );
    o.settle(&[settle(&late[0], Outcome::Published)])
        .await
        .unwrap();
}

async fn stats_and_purge(o: &impl Outbox, advance: &dyn Fn(Duration)) {
    o.enqueue(&event("s1", None).delay(Duration::from_secs(7200)))
        .await
        .unwrap();
    advance(Duration::from_secs(60));
    let stats = o.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 0), "{stats:?}");
    assert!(
        stats.oldest_pending.unwrap() >= Duration::from_secs(60),
        "{stats:?}"
    );
    let published = stats.published;
    assert!(published >= 8, "{stats:?}");
    advance(Duration::from_secs(3600));
    o.enqueue(&event("f1", None)).await.unwrap();
    let f1 = o.claim(1, LEASE).await.unwrap();
    o.settle(&[settle(&f1[0], Outcome::Published)])
        .await
        .unwrap();
    let purged = o.purge_published(Duration::from_secs(1800)).await.unwrap();
    assert_eq!(purged, published, "every published event but the newest");
    assert_eq!(o.stats().await.unwrap().published, 1);
}

async fn gone_pauses_its_topic_and_attempts_are_recorded(o: &impl Outbox) {
    use outbox::AttemptNote;
    for (topic, id) in [("hooks-a", "g1"), ("hooks-a", "g2"), ("hooks-b", "h1")] {
        o.enqueue(&Event::new(topic, id, "{}").unwrap())
            .await
            .unwrap();
    }
    let round = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&round), ["g1", "g2", "h1"]);
    let by_id = |id: &str| round.iter().find(|c| c.event.id == id).unwrap();
    let ms = Duration::from_millis;
    let settled = o
        .settle(&[
            settle(by_id("g1"), Outcome::Gone("410 Gone".into()))
                .with_attempt(AttemptNote::new(Some(410), ms(5))),
            settle(by_id("g2"), Outcome::RetryIn(Duration::ZERO, "503".into()))
                .with_attempt(AttemptNote::new(Some(503), ms(7))),
            settle(by_id("h1"), Outcome::Published)
                .with_attempt(AttemptNote::new(Some(200), ms(1))),
        ])
        .await
        .unwrap();
    assert_eq!(settled, 3);
    assert_eq!(o.paused_topics().await.unwrap(), ["hooks-a"]);
    assert_eq!(o.stats().await.unwrap().paused_topics, 1);
    assert_eq!(
        o.status("hooks-a", "g1").await.unwrap().unwrap().state,
        EventState::Dead
    );
    assert!(
        o.claim(10, LEASE).await.unwrap().is_empty(),
        "g2 waits: its topic is paused"
    );
    let g1 = o.attempts("hooks-a", "g1").await.unwrap();
    assert_eq!(g1.len(), 1);
    assert_eq!((g1[0].number, g1[0].note.status), (1, Some(410)));
    assert_eq!(g1[0].note.latency, ms(5));
    assert_eq!(g1[0].error.as_deref(), Some("410 Gone"));
    let h1 = o.attempts("hooks-b", "h1").await.unwrap();
    assert_eq!(
        (h1[0].note.status, h1[0].error.as_deref()),
        (Some(200), None)
    );
    assert!(o.resume_topic("hooks-a").await.unwrap());
    assert!(!o.resume_topic("hooks-a").await.unwrap());
    let g2 = o.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&g2), ["g2"], "resumed");
    o.settle(&[settle(&g2[0], Outcome::Published)])
        .await
        .unwrap();
    let g2 = o.attempts("hooks-a", "g2").await.unwrap();
    assert_eq!(
        g2.len(),
        1,
        "a settlement without a note records no attempt"
    );
    assert!(o.attempts("hooks-a", "nope").await.unwrap().is_empty());
}

/// `only_topics`: a view that claims only its topics, over the same events.
pub async fn only_topics<O: Outbox>(all: &O, hooks: &O) {
    all.enqueue(&Event::new("merchant", "w1", "{}").unwrap())
        .await
        .unwrap();
    all.enqueue(&Event::new("orders.created", "o1", "{}").unwrap())
        .await
        .unwrap();
    let claimed = hooks.claim(10, LEASE).await.unwrap();
    assert_eq!(
        ids(&claimed),
        ["w1"],
        "the webhook view claims its topic only"
    );
    let rest = all.claim(10, LEASE).await.unwrap();
    assert_eq!(ids(&rest), ["o1"]);
    assert_eq!(
        hooks.stats().await.unwrap().pending,
        2,
        "it sees every event"
    );
}

/// A sink that fails the events whose ids it is told to, and passes the rest to a channel.
pub struct Flaky {
    pub inner: ChannelSink,
    pub transient: Mutex<HashSet<String>>,
    pub rejected: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl Sink for Flaky {
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        let mut out = Vec::new();
        for e in events {
            if self.transient.lock().contains(&e.id) {
                out.push(Err(PublishError::Transient("broker down".into())));
            } else if self.rejected.lock().contains(&e.id) {
                out.push(Err(PublishError::Rejected("too large".into())));
            } else {
                out.extend(self.inner.publish(&[e]).await);
            }
        }
        out
    }
}

/// The relay over any store: the schedule, dead letters, and a rejection dead at once.
pub async fn relay_schedule(o: impl Outbox + Clone, advance: &dyn Fn(Duration)) {
    let (inner, mut rx) = ChannelSink::new();
    let sink = Flaky {
        inner,
        transient: Mutex::new(HashSet::from(["r1".to_owned()])),
        rejected: Mutex::new(HashSet::from(["r2".to_owned()])),
    };
    let schedule = Schedule::new([Duration::from_secs(1), Duration::from_secs(10)]).jitter(0.0);
    let relay = Relay::new(o.clone(), sink).schedule(schedule);
    for id in ["r1", "r2", "r3"] {
        o.enqueue(&event(id, None)).await.unwrap();
    }
    let round = relay.run_once().await.unwrap();
    assert_eq!(
        (round.published, round.retried, round.dead),
        (1, 1, 1),
        "{round:?}"
    );
    assert_eq!(rx.recv().await.unwrap().id, "r3");
    advance(Duration::from_millis(1100));
    let round = relay.run_once().await.unwrap();
    assert_eq!(round.retried, 1, "second attempt after 1 s: {round:?}");
    advance(Duration::from_millis(5_000));
    assert_eq!(
        relay.run_once().await.unwrap().claimed,
        0,
        "third waits 10 s"
    );
    advance(Duration::from_millis(5_100));
    let round = relay.run_once().await.unwrap();
    assert_eq!(round.dead, 1, "the third and last attempt fails: {round:?}");
    let dead = o.dead_letters(10).await.unwrap();
    let mut dead: Vec<_> = dead.iter().map(|d| (d.id.as_str(), d.attempts)).collect();
    dead.sort();
    assert_eq!(dead, [("r1", 3), ("r2", 1)]);
}
