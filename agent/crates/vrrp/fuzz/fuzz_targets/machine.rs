//! The state machine under arbitrary event sequences, with and without the
//! fresh-proof rule: never panics; the VIP actions alternate (never two
//! adds or two removes in a row); the VIP is held only in Master or
//! Leaving and only while quorum counts as held; with the proof rule, the
//! VIP is only ever added by a master whose claim was answered by a
//! successful proof issued at or after the claim began.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrrp::machine::{Action, Event, Health, Machine, Params, ProofParams, State};

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let proof = (flags & 2 == 0).then_some(ProofParams {
        renew: Duration::from_millis(200),
        lease: Duration::from_millis(2000),
        retry: Duration::from_millis(100),
        poll: Duration::from_millis(500),
    });
    let mut m = Machine::new(
        Params {
            vrid: 51,
            priority: 100,
            interval_cs: 20,
            preempt: flags & 1 == 0,
            preempt_delay: Duration::from_millis(u64::from(data.get(1).copied().unwrap_or(0)) * 10),
            local_addr: Ipv4Addr::new(10, 77, 0, 5),
            garp_burst: 3,
            garp_spacing: Duration::from_millis(100),
            garp_refresh: Duration::from_secs(10),
            proof,
        },
        Health::OK,
    );
    let start = Instant::now();
    let mut now = start;
    let mut has_vip = false;
    let mut apply = |m: &mut Machine, event: Event, now: Instant, has_vip: &mut bool| {
        let claim = m.claiming_since();
        let was = m.state();
        let answer = match &event {
            Event::Proof { issued, ok: true } => Some(*issued),
            _ => None,
        };
        let actions = m.handle(event, now);
        if proof.is_some() && was != State::Master && m.state() == State::Master {
            let (Some(since), Some(issued)) = (claim, answer) else {
                panic!("became master without a claim answered by a proof");
            };
            assert!(
                issued >= since,
                "became master on a proof older than the claim"
            );
        }
        for action in actions {
            match action {
                Action::AddVip => {
                    assert!(!*has_vip, "VIP added twice");
                    *has_vip = true;
                }
                Action::RemoveVip => {
                    assert!(*has_vip, "VIP removed while not held");
                    *has_vip = false;
                }
                _ => {}
            }
        }
        assert_eq!(*has_vip, m.holds_vip());
        if *has_vip {
            assert!(matches!(m.state(), State::Master | State::Leaving));
        }
        if *has_vip {
            assert!(m.quorum(now), "VIP held without quorum");
        }
        assert!(m.priority() >= 1);
    };
    for chunk in data.chunks(3) {
        let [kind, a, b] = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let next = now + Duration::from_millis(u64::from(b) * 4);
        // Like the shell: deadlines that pass are handled in time order.
        while let Some(d) = m.next_deadline().filter(|d| *d <= next) {
            now = now.max(d);
            apply(&mut m, Event::Timer, now, &mut has_vip);
        }
        now = next;
        let event = match kind % 7 {
            0 => Event::Startup,
            1 => Event::Advert {
                src: Ipv4Addr::new(10, 77, 0, a),
                priority: b,
                interval_cs: u16::from(a).max(1),
            },
            2 => Event::Health(Health {
                quorum: a & 1 == 1,
                penalty: b,
            }),
            3 => Event::Shutdown,
            // A proof issued up to ~2.5 s ago (never before the start).
            4 | 5 => Event::Proof {
                issued: (now - Duration::from_millis(u64::from(a) * 10)).max(start),
                ok: b & 3 != 0,
            },
            _ => Event::Timer,
        };
        apply(&mut m, event, now, &mut has_vip);
    }
});
