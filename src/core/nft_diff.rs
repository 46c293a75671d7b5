//! Every way a table read back differs from the one we want, in plain
//! words naming the object and what changed: table flags and comment, sets
//! (key, flags, userdata, elements added or missing), chains (hook, type,
//! priority, policy) and rules (changed statements, negated matches, moved,
//! missing, extra rules with our comment, foreign rules). Counter values
//! and the elements the kernel adds to a dynamic set (the log rules' meter)
//! never count as a difference; the meter's key, flags, timeout and size do.

use super::nft_model::*;
use super::nft_stmt::{duration_text, hex, raw_text, rule_text, statements, Stmt};
use super::nft_text::{element_texts, hook_name, policy_text, priority_text, set_flags_text, table_flags_text};
use std::collections::BTreeSet;
use std::fmt;

/// One difference: the object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `table`, `set sources_v4`, `chain forward`, `rule 2 of chain guard (block-tcp-port-v4)`.
    pub object: String,
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.what)
    }
}

/// What `got` has that `want` does not, and the reverse. Empty when equal.
pub fn differences(want: &TableModel, got: &TableModel) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |object: &str, what: String| {
        out.push(Difference {
            object: object.to_string(),
            what,
        })
    };
    if want.flags != got.flags {
        push("table flags", flag_change(want.flags, got.flags, table_flags_text));
    }
    if want.userdata != got.userdata {
        push("table comment", describe_udata(&want.userdata, &got.userdata));
    }
    if want.unknown != got.unknown {
        push("table", unknown_change(&want.unknown, &got.unknown));
    }
    for (name, w) in &want.sets {
        match got.sets.get(name) {
            None => push(&format!("set {name}"), "missing".into()),
            Some(g) => set_differences(&format!("set {name}"), w, g, &mut push),
        }
    }
    for name in got.sets.keys().filter(|n| !want.sets.contains_key(*n)) {
        push(&format!("set {name}"), "not ours (unexpected set)".into());
    }
    for (name, w) in &want.chains {
        match got.chains.get(name) {
            None => push(&format!("chain {name}"), "missing".into()),
            Some(g) => chain_differences(name, w, g, &mut push),
        }
    }
    for (name, g) in got.chains.iter().filter(|(n, _)| !want.chains.contains_key(*n)) {
        push(
            &format!("chain {name}"),
            format!("not ours (unexpected chain, {} rules)", g.rules.len()),
        );
    }
    out
}

fn flag_change(want: u32, got: u32, name: fn(u32) -> String) -> String {
    let mut parts = Vec::new();
    if want & !got != 0 {
        parts.push(format!("{} missing", name(want & !got)));
    }
    if got & !want != 0 {
        parts.push(format!("{} unexpected", name(got & !want)));
    }
    parts.join(", ")
}

fn describe_udata(want: &[u8], got: &[u8]) -> String {
    let show = |u: &[u8]| match udata_comment(u) {
        Some(c) => format!("\"{c}\""),
        None if u.is_empty() => "none".to_string(),
        None => format!("userdata 0x{}", hex(u)),
    };
    let (w, g) = (show(want), show(got));
    if w == g {
        format!("userdata 0x{} instead of 0x{}", hex(got), hex(want))
    } else {
        format!("{g} instead of {w}")
    }
}

fn unknown_change(want: &[RawAttr], got: &[RawAttr]) -> String {
    let show = |v: &[RawAttr]| {
        v.iter()
            .map(|a| format!("attribute {} = 0x{}", a.kind, hex(&a.value)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("unexpected attributes [{}] instead of [{}]", show(got), show(want))
}

fn set_differences(obj: &str, w: &SetModel, g: &SetModel, push: &mut impl FnMut(&str, String)) {
    if w.key != g.key {
        push(obj, format!("key type {} instead of {}", g.key.name(), w.key.name()));
    }
    if w.flags != g.flags {
        push(obj, format!("flags: {}", flag_change(w.flags, g.flags, set_flags_text)));
    }
    if w.userdata != g.userdata {
        push(
            obj,
            format!("userdata 0x{} instead of 0x{}", hex(&g.userdata), hex(&w.userdata)),
        );
    }
    if w.timeout_ms != g.timeout_ms {
        let t = |ms: u64| if ms == 0 { "none".to_string() } else { duration_text(ms) };
        push(
            obj,
            format!("timeout {} instead of {}", t(g.timeout_ms), t(w.timeout_ms)),
        );
    }
    if w.size != g.size {
        let n = |s: u32| if s == 0 { "none".to_string() } else { s.to_string() };
        push(obj, format!("size {} instead of {}", n(g.size), n(w.size)));
    }
    if w.unknown != g.unknown {
        push(obj, unknown_change(&w.unknown, &g.unknown));
    }
    if w.elements != g.elements {
        let (we, ge): (BTreeSet<String>, BTreeSet<String>) = if w.key == g.key && w.flags == g.flags {
            (
                element_texts(w).into_iter().collect(),
                element_texts(g).into_iter().collect(),
            )
        } else {
            let raw = |s: &SetModel| s.elements.iter().map(raw_element).collect();
            (raw(w), raw(g))
        };
        let added: Vec<&String> = ge.difference(&we).collect();
        let missing: Vec<&String> = we.difference(&ge).collect();
        let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("{} added", list(&added)));
        }
        if !missing.is_empty() {
            parts.push(format!("{} missing", list(&missing)));
        }
        if parts.is_empty() {
            // Same ranges, other kernel elements (e.g. a stray interval end).
            let raw = |s: &SetModel| s.elements.iter().map(raw_element).collect::<Vec<_>>().join(", ");
            parts.push(format!("kernel elements [{}] instead of [{}]", raw(g), raw(w)));
        }
        push(obj, format!("elements {}", parts.join(", ")));
    }
}

fn raw_element(e: &Element) -> String {
    let end = if e.flags & ELEM_F_INTERVAL_END != 0 {
        " (end)"
    } else {
        ""
    };
    let other = e.flags & !ELEM_F_INTERVAL_END;
    let other = if other != 0 {
        format!(" flags 0x{other:x}")
    } else {
        String::new()
    };
    format!("0x{}{end}{other}", hex(&e.key))
}

fn chain_differences(name: &str, w: &ChainModel, g: &ChainModel, push: &mut impl FnMut(&str, String)) {
    let obj = format!("chain {name}");
    match (&w.base, &g.base) {
        (Some(wb), Some(gb)) => {
            if wb.chain_type != gb.chain_type {
                push(&obj, format!("type {} instead of {}", gb.chain_type, wb.chain_type));
            }
            if wb.hook != gb.hook {
                push(
                    &obj,
                    format!("hook {} instead of {}", hook_name(gb.hook), hook_name(wb.hook)),
                );
            }
            if wb.priority != gb.priority {
                push(&obj, format!("priority {} instead of {}", gb.priority, wb.priority));
            }
            if wb.policy != gb.policy {
                push(
                    &obj,
                    format!(
                        "policy {} instead of {}",
                        policy_text(gb.policy),
                        policy_text(wb.policy)
                    ),
                );
            }
        }
        (Some(wb), None) => push(
            &obj,
            format!("a regular chain instead of a base chain on hook {}", hook_name(wb.hook)),
        ),
        (None, Some(gb)) => push(
            &obj,
            format!(
                "a base chain on hook {} priority {} instead of a regular chain",
                hook_name(gb.hook),
                priority_text(gb.priority)
            ),
        ),
        (None, None) => {}
    }
    if w.flags != g.flags {
        push(&obj, format!("flags 0x{:x} instead of 0x{:x}", g.flags, w.flags));
    }
    if w.userdata != g.userdata {
        push(&obj, format!("userdata {}", describe_udata(&w.userdata, &g.userdata)));
    }
    if w.unknown != g.unknown {
        push(&obj, unknown_change(&w.unknown, &g.unknown));
    }
    rule_differences(name, &w.rules, &g.rules, push);
}

/// Rule `i` (0-based) as people count it, with its comment.
fn rule_obj(chain: &str, i: usize, r: &RuleModel) -> String {
    match r.comment() {
        Some(c) => format!("rule {} of chain {chain} ({c})", i + 1),
        None => format!("rule {} of chain {chain}", i + 1),
    }
}

/// Pairs of equal rules in order (longest common subsequence).
fn common(w: &[RuleModel], g: &[RuleModel]) -> Vec<(usize, usize)> {
    let (n, m) = (w.len(), g.len());
    let mut t = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if w[i] == g[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if w[i] == g[j] {
            out.push((i, j));
            i += 1;
            j += 1;
        } else if t[i + 1][j] >= t[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn rule_differences(chain: &str, w: &[RuleModel], g: &[RuleModel], push: &mut impl FnMut(&str, String)) {
    if w == g {
        return;
    }
    let pairs = common(w, g);
    let mut w_left: Vec<usize> = (0..w.len()).filter(|i| !pairs.iter().any(|p| p.0 == *i)).collect();
    let mut g_left: Vec<usize> = (0..g.len()).filter(|j| !pairs.iter().any(|p| p.1 == *j)).collect();
    // Unmatched rules alike (same comment or same expressions): moved or changed.
    let mut i = 0;
    while i < w_left.len() {
        let wi = w_left[i];
        let same = |j: &usize| g[*j] == w[wi];
        let like =
            |j: &usize| (g[*j].comment().is_some() && g[*j].comment() == w[wi].comment()) || g[*j].exprs == w[wi].exprs;
        let found = g_left.iter().position(same).or_else(|| g_left.iter().position(like));
        let Some(k) = found else {
            i += 1;
            continue;
        };
        let gj = g_left.remove(k);
        w_left.remove(i);
        if g[gj] == w[wi] {
            push(&rule_obj(chain, wi, &w[wi]), format!("moved to position {}", gj + 1));
        } else {
            for what in expr_differences(&w[wi], &g[gj]) {
                push(&rule_obj(chain, gj, &g[gj]), what);
            }
        }
    }
    for wi in w_left {
        push(&rule_obj(chain, wi, &w[wi]), format!("missing ({})", rule_text(&w[wi])));
    }
    let ours: BTreeSet<String> = w.iter().filter_map(RuleModel::comment).collect();
    for gj in g_left {
        let r = &g[gj];
        let what = match r.comment() {
            Some(c) if ours.contains(&c) => format!("an extra rule with our comment \"{c}\": {}", rule_text(r)),
            _ => format!("a foreign rule: {}", rule_text(r)),
        };
        push(&format!("chain {chain}, position {}", gj + 1), what);
    }
}

/// How one rule differs from the one we want, statement by statement.
pub fn expr_differences(w: &RuleModel, g: &RuleModel) -> Vec<String> {
    let mut out = Vec::new();
    if w.userdata != g.userdata {
        out.push(format!("comment {}", describe_udata(&w.userdata, &g.userdata)));
    }
    if w.unknown != g.unknown {
        out.push(unknown_change(&w.unknown, &g.unknown));
    }
    if w.exprs == g.exprs {
        return out;
    }
    let (ws, gs) = (statements(&w.exprs), statements(&g.exprs));
    let same_shape = ws.len() == gs.len() && ws.iter().zip(&gs).all(|(a, b)| a.exprs == b.exprs);
    if same_shape {
        for (a, b) in ws.iter().zip(&gs) {
            let (ea, eb) = (&w.exprs[a.exprs.0..=a.exprs.1], &g.exprs[b.exprs.0..=b.exprs.1]);
            if ea != eb {
                out.push(stmt_difference(a, b, ea, eb));
            }
        }
    } else {
        out.push(format!("\"{}\" instead of \"{}\"", rule_text(g), rule_text(w)));
    }
    out
}

fn stmt_difference(w: &Stmt, g: &Stmt, we: &[Expr], ge: &[Expr]) -> String {
    if let (Some((wl, wo, wr)), Some((gl, go, gr))) = (&w.matches, &g.matches) {
        let op_word = |o: &str| {
            if o == "!=" {
                "negated (!=)".to_string()
            } else {
                o.to_string()
            }
        };
        if wl == gl && wr == gr && wo != go {
            return format!(
                "match on {gl} is {} instead of {}",
                op_word(go),
                if wo == "==" { "=" } else { wo }
            );
        }
        if wl != gl && wo == go && wr == gr {
            return format!("match on {gl} instead of {wl} (against {wr})");
        }
    }
    let text = |s: &Stmt, e: &[Expr]| {
        if s.text.is_empty() {
            e.iter().map(raw_text).collect::<Vec<_>>().join(" ")
        } else {
            s.text.clone()
        }
    };
    let (wt, gt) = (text(w, we), text(g, ge));
    if wt == gt {
        let raw = |e: &[Expr]| e.iter().map(raw_text).collect::<Vec<_>>().join(" ");
        format!("{} instead of {}", raw(ge), raw(we))
    } else {
        format!("\"{gt}\" instead of \"{wt}\"")
    }
}

#[cfg(test)]
#[path = "nft_diff_tests.rs"]
mod tests;
