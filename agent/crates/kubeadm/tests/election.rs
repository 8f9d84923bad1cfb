//! The init election against a real etcd: N concurrent contenders, exactly
//! one wins, all agree, and asking again changes nothing.

mod common;

use kubeadm::election::{elect_init_node, init_done, mark_init_done, INIT_NODE_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_many_concurrent_contenders_wins() {
    let etcd = common::start_etcd("elect").await;
    for round in 0..3 {
        // A fresh key space per round: delete the key between rounds.
        let mut c = common::client(&etcd).await;
        c.delete(INIT_NODE_KEY, None).await.unwrap();
        let n = 16;
        let mut tasks = Vec::new();
        for i in 0..n {
            let url = etcd.client_url.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = etcd_client::Client::connect([url.as_str()], None)
                    .await
                    .unwrap();
                let id = format!("node-{round}-{i:02}");
                let r = elect_init_node(&mut c, &id).await.unwrap();
                (id, r)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.won).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = &winners[0].0;
        for (id, r) in &results {
            assert_eq!(&r.winner, winner, "{id} disagrees");
            assert_eq!(r.won, id == winner);
        }
        // Idempotent: everyone asking again gets the same answer.
        for (id, _) in &results {
            let again = elect_init_node(&mut c, id).await.unwrap();
            assert_eq!(&again.winner, winner);
            assert_eq!(again.won, id == winner);
        }
    }
}

#[tokio::test]
async fn init_done_marker_is_written_once() {
    let etcd = common::start_etcd("done").await;
    let mut c = common::client(&etcd).await;
    assert_eq!(init_done(&mut c).await.unwrap(), None);
    mark_init_done(&mut c, "node-a").await.unwrap();
    mark_init_done(&mut c, "node-b").await.unwrap();
    assert_eq!(init_done(&mut c).await.unwrap().as_deref(), Some("node-a"));
}
