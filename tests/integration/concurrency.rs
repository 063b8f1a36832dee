//! Many clients adding to several lists at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::support::NodeBuilder;

#[test]
fn concurrent_adds_are_all_kept_with_unique_ids() {
    const CLIENTS: usize = 8;
    const ADDS_PER_CLIENT: usize = 40;
    const LISTS: usize = 5;
    let node = Arc::new(NodeBuilder::todo().start());

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let node = node.clone();
            std::thread::spawn(move || {
                let mut created = Vec::new();
                for i in 0..ADDS_PER_CLIENT {
                    let list = format!("list{}", (client + i) % LISTS);
                    let body = format!(r#"{{"date":"2024-02-01","title":"c{client}-{i}"}}"#);
                    let response = node.post(&format!("/lists/{list}/entries"), &body);
                    assert_eq!(response.status, 201, "{}", response.text());
                    let id = response.json()["id"].as_u64().expect("an id");
                    created.push((list, id, format!("c{client}-{i}")));
                }
                created
            })
        })
        .collect();
    let created: Vec<(String, u64, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert_eq!(created.len(), CLIENTS * ADDS_PER_CLIENT);

    let mut per_list: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for (list, id, title) in created {
        per_list.entry(list).or_default().push((id, title));
    }
    for (list, mut acknowledged) in per_list {
        acknowledged.sort();
        let ids: BTreeSet<u64> = acknowledged.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), acknowledged.len(), "ids in {list} are unique");
        assert_eq!(
            ids.iter().copied().collect::<Vec<_>>(),
            (1..=acknowledged.len() as u64).collect::<Vec<_>>()
        );

        let stored = node.get(&format!("/lists/{list}/entries"));
        let stored: Vec<(u64, String)> = stored
            .json()
            .as_array()
            .expect("an array")
            .iter()
            .map(|e| {
                (
                    e["id"].as_u64().unwrap_or(0),
                    e["title"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            stored, acknowledged,
            "list {list} holds exactly what was acknowledged"
        );
    }
}
