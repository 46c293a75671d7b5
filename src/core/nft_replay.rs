//! Replays a plan's ops on a model of the table the way the kernel applies
//! them, refusing what the kernel refuses (an absent object named, a set or
//! chain redeclared with another shape, deleting a set a rule uses or a
//! chain a rule jumps to, a rule naming an absent set or chain). The pure
//! stand-in for a kernel transaction that the planner is tested against;
//! the kernel tests check the same plans for real.

use super::nft_model::*;
use super::nft_plan::Op;

/// The table after `ops` applied in one transaction to `table` (None:
/// absent); the refusal of the first op the kernel would refuse.
pub fn replay(table: Option<TableModel>, ops: &[Op]) -> Result<Option<TableModel>, String> {
    let mut t = table;
    for (i, op) in ops.iter().enumerate() {
        t = step(t, op).map_err(|e| format!("op {} ({op:?}): {e}", i + 1))?;
    }
    Ok(t)
}

fn step(t: Option<TableModel>, op: &Op) -> Result<Option<TableModel>, String> {
    if let Op::Table { flags, userdata } = op {
        return Ok(Some(match t {
            // The kernel updates only the flags of an existing table.
            Some(existing) => TableModel {
                flags: *flags,
                ..existing
            },
            None => TableModel {
                flags: *flags,
                userdata: userdata.clone(),
                ..Default::default()
            },
        }));
    }
    let Some(mut t) = t else {
        return Err("no such table (ENOENT)".into());
    };
    match op {
        Op::Table { .. } => unreachable!("handled above"),
        Op::DeleteTable => return Ok(None),
        Op::FlushChain(c) => chain(&mut t, c)?.rules.clear(),
        Op::DeleteChain(c) => {
            chain(&mut t, c)?;
            let jumped = t.chains.iter().any(|(name, other)| {
                name != c
                    && other.rules.iter().any(|r| {
                        r.exprs.iter().any(|e| {
                            matches!(e, Expr::Immediate { verdict: Verdict::Jump(to) | Verdict::Goto(to), .. } if to == c)
                        })
                    })
            });
            if jumped {
                return Err(format!("chain {c} is jumped to (EBUSY)"));
            }
            t.chains.remove(c);
        }
        Op::DeleteSet(s) => {
            set(&mut t, s)?;
            if uses_set(&t, s) {
                return Err(format!("set {s} is used by a rule (EBUSY)"));
            }
            t.sets.remove(s);
        }
        Op::AddSet(name, want) => match t.sets.get(name) {
            Some(got) if got.key != want.key || got.flags != want.flags => {
                return Err(format!("set {name} exists with another shape (EEXIST)"))
            }
            Some(_) => {}
            None => {
                t.sets.insert(
                    name.clone(),
                    SetModel {
                        elements: Default::default(),
                        ..want.clone()
                    },
                );
            }
        },
        Op::FlushSet(s) => set(&mut t, s)?.elements.clear(),
        Op::AddElements(s, elements) => set(&mut t, s)?.elements.extend(elements.iter().cloned()),
        Op::DeleteElements(s, elements) => {
            let set = set(&mut t, s)?;
            for e in elements {
                if !set.elements.remove(e) {
                    return Err(format!("element of set {s} absent (ENOENT)"));
                }
            }
        }
        Op::AddChain(name, want) => match t.chains.get_mut(name) {
            Some(got) => match (&mut got.base, &want.base) {
                (Some(g), Some(w)) if (&g.chain_type, g.hook, g.priority) == (&w.chain_type, w.hook, w.priority) => {
                    g.policy = w.policy
                }
                (None, None) => {}
                _ => return Err(format!("chain {name} exists with another hook (EEXIST)")),
            },
            None => {
                t.chains.insert(
                    name.clone(),
                    ChainModel {
                        rules: Vec::new(),
                        ..want.clone()
                    },
                );
            }
        },
        Op::AddRule(c, rule) => {
            for e in &rule.exprs {
                if let Some(s) = set_refs(e).into_iter().find(|s| !t.sets.contains_key(*s)) {
                    return Err(format!("rule uses absent set {s} (ENOENT)"));
                }
                match e {
                    Expr::Immediate {
                        verdict: Verdict::Jump(to) | Verdict::Goto(to),
                        ..
                    } if !t.chains.contains_key(to) => return Err(format!("rule jumps to absent chain {to} (ENOENT)")),
                    _ => {}
                }
            }
            chain(&mut t, c)?.rules.push(rule.clone());
        }
    }
    Ok(Some(t))
}

fn chain<'t>(t: &'t mut TableModel, name: &str) -> Result<&'t mut ChainModel, String> {
    t.chains
        .get_mut(name)
        .ok_or_else(|| format!("no chain {name} (ENOENT)"))
}

fn set<'t>(t: &'t mut TableModel, name: &str) -> Result<&'t mut SetModel, String> {
    t.sets.get_mut(name).ok_or_else(|| format!("no set {name} (ENOENT)"))
}

fn uses_set(t: &TableModel, name: &str) -> bool {
    t.chains.values().any(|c| {
        c.rules
            .iter()
            .any(|r| r.exprs.iter().any(|e| set_refs(e).contains(&name)))
    })
}

/// The sets an expression names: a lookup's, a dynset's (`update @set`) and
/// those of the expressions a dynset carries.
fn set_refs(e: &Expr) -> Vec<&str> {
    match e {
        Expr::Lookup { set, .. } => vec![set.as_str()],
        Expr::Dynset { set, exprs, .. } => std::iter::once(set.as_str())
            .chain(exprs.iter().flat_map(set_refs))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter_rule() -> RuleModel {
        RuleModel::new(
            vec![Expr::Dynset {
                op: 1,
                set: "attempts".into(),
                sreg_key: 1,
                timeout_ms: 0,
                flags: 0,
                exprs: vec![Expr::Limit {
                    rate: 10,
                    unit_secs: 60,
                    burst: 5,
                    kind: 0,
                    flags: 0,
                }],
            }],
            "meter",
        )
    }

    fn table_with_meter() -> TableModel {
        let ops = [
            Op::Table {
                flags: 0,
                userdata: Vec::new(),
            },
            Op::AddSet(
                "attempts".into(),
                SetModel::new(KeyType::Ipv4Addr, 0, Vec::new(), Default::default()),
            ),
            Op::AddChain("decide".into(), ChainModel::default()),
            Op::AddRule("decide".into(), meter_rule()),
        ];
        replay(None, &ops).unwrap().unwrap()
    }

    #[test]
    fn a_rule_updating_an_absent_set_is_refused() {
        let mut t = table_with_meter();
        t.sets.clear();
        t.chains.get_mut("decide").unwrap().rules.clear();
        let err = replay(Some(t), &[Op::AddRule("decide".into(), meter_rule())]).unwrap_err();
        assert!(err.contains("absent set attempts"), "{err}");
    }

    #[test]
    fn a_set_a_dynset_updates_cannot_be_deleted_until_its_rule_is_gone() {
        let t = table_with_meter();
        let err = replay(Some(t.clone()), &[Op::DeleteSet("attempts".into())]).unwrap_err();
        assert!(err.contains("EBUSY"), "{err}");
        let after = replay(
            Some(t),
            &[Op::FlushChain("decide".into()), Op::DeleteSet("attempts".into())],
        )
        .unwrap()
        .unwrap();
        assert!(after.sets.is_empty());
    }

    #[test]
    fn sets_named_inside_a_dynset_count_as_used() {
        let inner = Expr::Dynset {
            op: 1,
            set: "inner".into(),
            sreg_key: 1,
            timeout_ms: 0,
            flags: 0,
            exprs: Vec::new(),
        };
        let outer = Expr::Dynset {
            op: 1,
            set: "outer".into(),
            sreg_key: 1,
            timeout_ms: 0,
            flags: 0,
            exprs: vec![inner],
        };
        assert_eq!(set_refs(&outer), vec!["outer", "inner"]);
        assert!(set_refs(&Expr::Counter(Default::default())).is_empty());
    }
}
