//! The demo's scenarios, each required to behave as the demo says.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_scenario_behaves_as_expected() {
    let outcomes = examples::demo::run(|_, _, _| {}).await;
    assert_eq!(outcomes.len(), 10);
    for o in &outcomes {
        assert!(
            o.ok,
            "{}: expected {}, observed {}",
            o.name, o.expected, o.observed
        );
    }
}
