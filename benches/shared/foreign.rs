//! The foreign ruleset of the benches: `n` kube-proxy-like iptables-nft rules that never match pod
//! -> apiserver traffic, half in FORWARD between unrelated /32s, half in a KUBE-SERVICES chain that
//! nothing jumps to, as `iptables-nft-restore --noflush` input.

pub fn foreign_rules(n: usize) -> String {
    let mut s = String::with_capacity(n * 80);
    s.push_str("*filter\n:KUBE-SERVICES - [0:0]\n");
    let half = n / 2;
    for i in 0..n {
        let (a, b, c) = ((i >> 16) & 15, (i >> 8) & 255, i & 255);
        if i < half {
            s.push_str(&format!(
                "-A FORWARD -s 172.{}.{b}.{c}/32 -d 172.{}.{b}.{c}/32 -m comment --comment \"ns/svc-{i}\" -j ACCEPT\n",
                16 + a,
                17 + a
            ));
        } else {
            s.push_str(&format!(
                "-A KUBE-SERVICES -d 172.{}.{b}.{c}/32 -p tcp -m tcp --dport 443 -m comment --comment \"ns/svc-{i}\" -j RETURN\n",
                18 + a
            ));
        }
    }
    s.push_str("COMMIT\n");
    s
}
