//! Storage's namespaces, scans and batches on a real RocksDB in a temp dir.

use super::*;

fn open() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path(), Durability::Wal).expect("open");
    (dir, storage)
}

#[tokio::test]
async fn components_never_see_each_others_keys() {
    let (_dir, storage) = open();
    let todo = storage.namespace("todo");
    let other = storage.namespace("todox");
    todo.put(b"secret", b"1").await.expect("put");
    assert_eq!(other.get(b"secret"), Ok(None));
    assert!(other.scan_prefix(b"", None, 100).expect("scan").is_empty());
    // A key that starts with a zero byte still lands in the caller's range.
    other.put(b"\0secret", b"2").await.expect("put");
    assert_eq!(todo.get(b"secret"), Ok(Some(b"1".to_vec())));
    assert_eq!(todo.scan_prefix(b"", None, 100).expect("scan").len(), 1);
}

#[tokio::test]
async fn scans_page_through_a_prefix_in_key_order() {
    let (_dir, storage) = open();
    let ns = storage.namespace("c");
    for i in 0..10u8 {
        ns.put(&[b'a', i], &[i]).await.expect("put");
    }
    ns.put(b"b", b"outside").await.expect("put");
    let first = ns.scan_prefix(b"a", None, 4).expect("scan");
    assert_eq!(first.len(), 4);
    let last_key = first.last().map(|(k, _)| k.clone()).expect("a key");
    let rest = ns.scan_prefix(b"a", Some(&last_key), 100).expect("scan");
    assert_eq!(rest.len(), 6);
    assert_eq!(rest[0].0, vec![b'a', 4]);
}

#[tokio::test]
async fn a_scan_stops_gathering_past_its_byte_limit() {
    let (_dir, storage) = open();
    let ns = storage.namespace("c");
    let value = vec![1u8; MAX_SCAN_BYTES / 4];
    for i in 0..10u8 {
        ns.put(&[i], &value).await.expect("put");
    }
    let first = ns.scan_prefix(b"", None, 1000).expect("scan");
    assert_eq!(first.len(), 4, "stops once past the limit, not at 10");
    let last_key = first.last().map(|(k, _)| k.clone()).expect("a key");
    let rest = ns.scan_prefix(b"", Some(&last_key), 1000).expect("scan");
    assert_eq!(rest.len(), 4);
    // The largest value a one-byte key allows.
    let huge = vec![2u8; MAX_VALUE_BYTES - 1];
    ns.put(b"\xff", &huge).await.expect("put");
    let last = ns.scan_prefix(b"\xff", None, 1000).expect("scan");
    assert_eq!(
        last.len(),
        1,
        "a value as large as the limit still comes back"
    );
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_bounded() {
    let (_dir, storage) = open();
    let ns = storage.namespace("c");
    let bad = vec![
        Operation::Put(b"k1".to_vec(), b"v".to_vec()),
        Operation::Put(Vec::new(), b"v".to_vec()),
    ];
    assert_eq!(ns.batch(bad).await, Err(StorageError::InvalidKey));
    assert_eq!(ns.get(b"k1"), Ok(None));
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    assert_eq!(ns.put(b"k", &big).await, Err(StorageError::TooLarge));
    ns.batch(vec![
        Operation::Put(b"k1".to_vec(), b"v1".to_vec()),
        Operation::Delete(b"k2".to_vec()),
    ])
    .await
    .expect("batch");
    assert_eq!(ns.get(b"k1"), Ok(Some(b"v1".to_vec())));
}

#[tokio::test]
async fn a_database_that_fails_a_write_says_so_and_refuses_the_next_ones_up_front() {
    let (dir, storage) = open();
    let ns = storage.namespace("c");
    ns.put(b"before", b"1").await.expect("put");
    assert_eq!(storage.failure(), None);
    assert_eq!(storage.can_reopen(), Ok(()), "a folder it can write in");
    // Its files gone, a flush cannot create its table file: RocksDB sets
    // its background error and refuses every write from then on.
    std::fs::remove_dir_all(dir.path()).expect("remove the database's files");
    assert!(storage.flush().is_err(), "the flush has nowhere to write");
    let first = ns.put(b"after", b"2").await;
    assert!(
        matches!(&first, Err(StorageError::Indeterminate(why)) if why.contains("storage failed")),
        "{first:?}"
    );
    let failure = storage.failure().expect("the failure is kept");
    let second = ns.put(b"later", b"3").await;
    assert_eq!(
        second,
        Err(StorageError::Unavailable(format!(
            "storage failed and takes no writes until the node has restarted to reopen it, \
             which it does by itself once the cause is gone ({failure})"
        )))
    );
    let series = storage.series();
    let value = |name: &str| series.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(value("host_storage_failed"), Some(1));
    assert_eq!(value("host_storage_write_errors_total"), Some(1));
    // Reads still work.
    assert_eq!(ns.get(b"before"), Ok(Some(b"1".to_vec())));
    // Its folder gone, it cannot be reopened, and says why.
    let still = storage.can_reopen().expect_err("nowhere to reopen it");
    assert!(still.contains("cannot write a file in"), "{still}");
}
