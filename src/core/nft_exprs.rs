//! Builders of the kernel expressions our rules are made of (register 1
//! unless said), shared by `nft_desired` and `nft_answers`: a match is
//! spelled once, the way nft itself sends it.

use super::nft_model::*;

/// `meta <key>` into register 1.
pub fn meta(key: u32) -> Expr {
    Expr::Meta { key, dreg: REG_1 }
}

/// Register 1 compared with `data`.
pub fn cmp(op: u32, data: Vec<u8>) -> Expr {
    Expr::Cmp { sreg: REG_1, op, data }
}

/// `len` bytes at `offset` of the header `base` into `dreg`.
pub fn payload(base: u32, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

/// `meta l4proto tcp`: the dependency of every TCP header load.
pub fn l4_tcp() -> [Expr; 2] {
    [meta(META_L4PROTO), cmp(CMP_EQ, vec![IPPROTO_TCP])]
}

/// `tcp flags & mask <op> value` with its `meta l4proto tcp` dependency
/// (`tcp flags rst`: `& rst != 0`; `tcp flags syn / syn,ack`: `& (syn|ack) == syn`).
pub fn tcp_flags(mask: u8, op: u32, value: u8) -> Vec<Expr> {
    let mut e = l4_tcp().to_vec();
    e.extend(masked_payload(
        PAYLOAD_TRANSPORT,
        TCP_FLAGS_OFFSET,
        &[mask],
        op,
        &[value],
    ));
    e
}

/// The bytes at `offset` of the header `base` (as many as `mask` has),
/// masked, compared with `value` (`ip frag-off & 0x3fff != 0`).
pub fn masked_payload(base: u32, offset: u32, mask: &[u8], op: u32, value: &[u8]) -> [Expr; 3] {
    let len = mask.len() as u32;
    [
        payload(base, offset, len, REG_1),
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            len,
            mask: mask.to_vec(),
            xor: vec![0; mask.len()],
        },
        cmp(op, value.to_vec()),
    ]
}

/// A rule's verdict expressions, or `return` for a rule without a verdict
/// (an audit rule): how a rule that has decided leaves its chain.
pub fn verdict_or_return(verdict: Option<Vec<Expr>>) -> Vec<Expr> {
    verdict.unwrap_or_else(|| {
        vec![Expr::Immediate {
            dreg: REG_VERDICT,
            verdict: Verdict::Return,
        }]
    })
}
