//! Deliveries to real HTTP receivers on loopback, on the in-memory outbox with a manual clock:
//! the schedule, 410, Retry-After, timeouts, redirects, signatures, the SSRF guard.

mod common;

use common::{loopback_sender, Answer, Receiver};
use std::time::Duration;
use webhook_delivery::{
    Dispatcher, Endpoint, EventState, ManualClock, MemoryOutbox, Outbox, Schedule, Sender,
    WebhookEvent, WebhookOutbox,
};
use webhook_sig::{Scheme, Secret, Signer, Verifier};

fn secret() -> Secret {
    Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
}

struct Rig {
    clock: ManualClock,
    outbox: MemoryOutbox,
    dispatcher: Dispatcher<MemoryOutbox>,
}

fn rig(receiver: &Receiver, sender: Sender, schedule: Schedule) -> Rig {
    let clock = ManualClock::at_unix_secs(1_700_000_000);
    let outbox = MemoryOutbox::new().with_clock(clock.clone());
    let signer = Signer::new(Scheme::StandardWebhooks, &secret()).with_clock(clock.clone());
    let dispatcher = Dispatcher::new(outbox.clone(), sender)
        .endpoint(Endpoint::new("hook", &receiver.url, signer).unwrap())
        .schedule(schedule)
        .batch(1);
    Rig {
        clock,
        outbox,
        dispatcher,
    }
}

/// The webhook status of `id` for `endpoint`, which must be in the outbox.
async fn status(outbox: &MemoryOutbox, endpoint: &str, id: &str) -> webhook_delivery::EventStatus {
    let status = outbox.webhook_status(endpoint, id).await.unwrap();
    status.expect("the event is in the outbox")
}

fn event(id: &str) -> WebhookEvent {
    WebhookEvent::new("hook", id, format!(r#"{{"id":"{id}"}}"#)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_is_delivered_when_the_schedule_allows() {
    let receiver = Receiver::start([Answer::Status(500), Answer::Status(502)]).await;
    let r = rig(
        &receiver,
        loopback_sender(Duration::from_secs(5)),
        Schedule::default().jitter(0.0),
    );
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();

    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    // Nothing is due before the 5 s of the schedule.
    r.clock.advance(Duration::from_millis(4_999));
    assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    r.clock.advance(Duration::from_millis(1));
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    // The third attempt waits 5 minutes.
    r.clock.advance(Duration::from_secs(299));
    assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(r.dispatcher.run_once().await.unwrap().delivered, 1);
    r.clock.advance(Duration::from_secs(36_000));
    assert_eq!(
        r.dispatcher.run_once().await.unwrap().claimed,
        0,
        "delivered once"
    );

    assert_eq!(receiver.count(), 3);
    let status = status(&r.outbox, "hook", "evt_1").await;
    assert_eq!(status.state, EventState::Delivered);
    let codes: Vec<_> = status.attempts.iter().map(|a| a.attempt.status).collect();
    assert_eq!(codes, [Some(500), Some(502), Some(200)]);

    // Every attempt: the same id, its own timestamp, a signature the receiver accepts.
    let verifier =
        Verifier::new(Scheme::StandardWebhooks, secret()).tolerance(Duration::from_secs(3600));
    let got = receiver.received.lock().clone();
    let stamps: Vec<u64> = got
        .iter()
        .map(|req| {
            let v = verifier
                .verify_at(
                    &req.headers,
                    &req.body,
                    req.headers["webhook-timestamp"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
                .unwrap();
            assert_eq!(v.id.as_deref(), Some("evt_1"));
            assert_eq!(req.headers["content-type"], "application/json");
            v.timestamp.unwrap()
        })
        .collect();
    assert_eq!(stamps, [1_700_000_000, 1_700_000_005, 1_700_000_305]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_and_no_more_attempts_are_made() {
    let receiver = Receiver::start([Answer::Status(410)]).await;
    let r = rig(
        &receiver,
        loopback_sender(Duration::from_secs(5)),
        Schedule::default().jitter(0.0),
    );
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();
    r.outbox.enqueue_webhook(&event("evt_2")).await.unwrap();

    assert_eq!(r.dispatcher.run_once().await.unwrap().disabled, 1);
    for _ in 0..3 {
        r.clock.advance(Duration::from_secs(11 * 3600));
        assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    }
    assert_eq!(receiver.count(), 1);
    assert_eq!(r.outbox.disabled_endpoints().await.unwrap(), ["hook"]);
    assert_eq!(
        status(&r.outbox, "hook", "evt_1").await.state,
        EventState::EndpointDisabled
    );
    // The endpoint's other event waits, and goes once it is enabled again.
    assert_eq!(
        status(&r.outbox, "hook", "evt_2").await.state,
        EventState::Pending
    );
    r.outbox.enable_endpoint("hook").await.unwrap();
    assert_eq!(r.dispatcher.run_once().await.unwrap().delivered, 1);
    assert_eq!(receiver.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pushes_the_next_attempt_later() {
    let receiver = Receiver::start([
        Answer::WithHeader(503, "retry-after", "120"),
        Answer::WithHeader(429, "retry-after", "1"),
    ])
    .await;
    let r = rig(
        &receiver,
        loopback_sender(Duration::from_secs(5)),
        Schedule::default().jitter(0.0),
    );
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();

    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    // The schedule says 5 s; the receiver said 120 s.
    r.clock.advance(Duration::from_secs(5));
    assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    r.clock.advance(Duration::from_secs(114));
    assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    // A shorter Retry-After than the schedule does not bring the attempt earlier (5 min).
    r.clock.advance(Duration::from_secs(2));
    assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    r.clock.advance(Duration::from_secs(298));
    assert_eq!(r.dispatcher.run_once().await.unwrap().delivered, 1);
    assert_eq!(receiver.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_hits_the_timeout() {
    let receiver = Receiver::start([Answer::Stall(Duration::from_secs(30))]).await;
    let r = rig(
        &receiver,
        loopback_sender(Duration::from_millis(300)),
        Schedule::default().jitter(0.0),
    );
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let status = status(&r.outbox, "hook", "evt_1").await;
    let attempt = &status.attempts[0].attempt;
    assert_eq!(attempt.status, None);
    assert!(
        attempt.error.as_deref().unwrap().contains("timeout"),
        "{attempt:?}"
    );
    assert!(attempt.latency >= Duration::from_millis(250), "{attempt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let receiver = Receiver::start([Answer::WithHeader(302, "location", "/elsewhere")]).await;
    let r = rig(
        &receiver,
        loopback_sender(Duration::from_secs(5)),
        Schedule::default().jitter(0.0),
    );
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    assert_eq!(receiver.count(), 1, "the redirect target was not called");
    let status = status(&r.outbox, "hook", "evt_1").await;
    assert_eq!(status.attempts[0].attempt.status, Some(302));
    assert_eq!(status.state, EventState::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_failed_attempt_exhausts_the_event() {
    let receiver = Receiver::start([Answer::Status(500), Answer::Status(500)]).await;
    let schedule = Schedule::new([Duration::from_secs(1)]).jitter(0.0);
    let r = rig(&receiver, loopback_sender(Duration::from_secs(5)), schedule);
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(r.dispatcher.run_once().await.unwrap().exhausted, 1);
    r.clock.advance(Duration::from_secs(3600));
    assert_eq!(r.dispatcher.run_once().await.unwrap().claimed, 0);
    assert_eq!(
        status(&r.outbox, "hook", "evt_1").await.state,
        EventState::Exhausted
    );
    assert_eq!(receiver.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_guard_refuses_loopback_before_sending() {
    let receiver = Receiver::start([]).await;
    let r = rig(
        &receiver,
        Sender::new().unwrap(),
        Schedule::default().jitter(0.0),
    );
    r.outbox.enqueue_webhook(&event("evt_1")).await.unwrap();
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    assert_eq!(receiver.count(), 0, "nothing reached the receiver");
    let status = status(&r.outbox, "hook", "evt_1").await;
    let error = status.attempts[0].attempt.error.clone().unwrap();
    assert!(
        error.contains("not allowed") && error.contains("Loopback"),
        "{error}"
    );

    // A name that resolves to loopback is refused at resolution.
    let named = receiver.url.replace("127.0.0.1", "localhost");
    let endpoint = Endpoint::new(
        "named",
        &named,
        Signer::new(Scheme::StandardWebhooks, &secret()),
    )
    .unwrap();
    let delivery = Sender::new()
        .unwrap()
        .send(&endpoint, &event("evt_2"))
        .await;
    assert!(
        matches!(
            delivery.error,
            Some(webhook_delivery::DeliveryError::Blocked(_))
        ),
        "{delivery:?}"
    );
    assert_eq!(receiver.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_endpoint_is_retried_not_lost() {
    let receiver = Receiver::start([]).await;
    let r = rig(
        &receiver,
        loopback_sender(Duration::from_secs(5)),
        Schedule::default().jitter(0.0),
    );
    r.outbox
        .enqueue_webhook(&WebhookEvent::new("nobody", "evt_1", "{}").unwrap())
        .await
        .unwrap();
    assert_eq!(r.dispatcher.run_once().await.unwrap().retried, 1);
    let status = status(&r.outbox, "nobody", "evt_1").await;
    assert!(status.attempts[0]
        .attempt
        .error
        .as_deref()
        .unwrap()
        .contains("nobody"));
}

/// Ed25519 and Stripe-style endpoints sign with their own scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_signs_with_its_own_scheme() {
    let receiver = Receiver::start([]).await;
    let key = webhook_sig::SigningKey::from_seed([5; 32]);
    let stripe = Secret::from_text("whsec_stripe_test").unwrap();
    let outbox = MemoryOutbox::new();
    let dispatcher = Dispatcher::new(outbox.clone(), loopback_sender(Duration::from_secs(5)))
        .endpoint(Endpoint::new("ed", &receiver.url, Signer::ed25519(&key)).unwrap())
        .endpoint(
            Endpoint::new(
                "stripe",
                &receiver.url,
                Signer::new(Scheme::Stripe, &stripe),
            )
            .unwrap(),
        );
    outbox
        .enqueue_webhook(&WebhookEvent::new("ed", "evt_1", "{}").unwrap())
        .await
        .unwrap();
    outbox
        .enqueue_webhook(&WebhookEvent::new("stripe", "evt_1", "{}").unwrap())
        .await
        .unwrap();
    assert_eq!(dispatcher.run_once().await.unwrap().delivered, 2);
    let got = receiver.received.lock().clone();
    let ed = Verifier::ed25519(key.public_key());
    let st = Verifier::new(Scheme::Stripe, stripe);
    assert_eq!(
        got.iter()
            .filter(|r| ed.verify(&r.headers, &r.body).is_ok())
            .count(),
        1
    );
    assert_eq!(
        got.iter()
            .filter(|r| st.verify(&r.headers, &r.body).is_ok())
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_until_shutdown() {
    let receiver = Receiver::start([]).await;
    let outbox = MemoryOutbox::new();
    let dispatcher = Dispatcher::new(outbox.clone(), loopback_sender(Duration::from_secs(5)))
        .endpoint(
            Endpoint::new(
                "hook",
                &receiver.url,
                Signer::new(Scheme::StandardWebhooks, &secret()),
            )
            .unwrap(),
        )
        .poll_interval(Duration::from_millis(20))
        .workers(3);
    for i in 0..50 {
        outbox
            .enqueue_webhook(&event(&format!("evt_{i}")))
            .await
            .unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        dispatcher
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while outbox.stats().await.unwrap().published < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "not all delivered in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receiver.count(), 50);
}
