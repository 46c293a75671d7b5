//! Filling the daemon's kernel meters (dynamic sets) with `nft`, as pods
//! forging sources or making connects by the thousand would: the state the
//! full-meter tests start from. Needs the daemon's table not owned
//! (`--table-ownership off`), so another process may add elements.

use super::Netns;

/// A meter's size.
pub const METER_SIZE: u32 = apiserver_guard::core::model::METER.size;

/// Fills our table's set `set` in `node` until the kernel refuses more,
/// with the keys `key(i)` (on `lo`, from sources outside every pod's
/// address); checks that it is full. Returns how many were added.
pub fn fill(node: &Netns, set: &str, key: impl Fn(u32) -> String) -> u32 {
    let add = |from: u32, to: u32| -> bool {
        let keys: Vec<String> = (from..to).map(&key).collect();
        let script = format!("add element inet apiserver_guard {set} {{ {} }}\n", keys.join(", "));
        node.run_stdin(&["nft", "-f", "-"], &script).status.success()
    };
    let mut added = 0;
    for step in [5000, 100, 1] {
        while added + step <= METER_SIZE && add(added, added + step) {
            added += step;
        }
    }
    assert!(added > METER_SIZE - 100, "{set} not filled: {added} added");
    // Full: a new key gets no element.
    assert!(
        !add(METER_SIZE + 1, METER_SIZE + 2),
        "{set} took one more element: not full"
    );
    added
}

/// `"lo" . 10.99.x.y`, the `i`th (from 65,536 on: 10.98.x.y).
pub fn source_key(i: u32) -> String {
    format!("\"lo\" . 10.{}.{}.{}", 99 - (i >> 16), (i >> 8) & 0xff, i & 0xff)
}
