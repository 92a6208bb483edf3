//! Scenarios run short with every invariant on; determinism; the report's
//! figures add up.

use crate::attack::{self, Campaign};
use crate::report::{self, Outcome};
use crate::scenario::{self, Config, Policy, PolicyReport, Scenario};

fn small(scenario: Scenario, seed: u64) -> Config {
    Config {
        host_mib: 96,
        guests: 3,
        overcommit: 1.5,
        seed,
        scenario,
        steps: 150,
        audit_every: 25,
        sample_every: 5,
    }
}

fn run(config: &Config, policy: Policy) -> PolicyReport {
    let mut r = scenario::run(config, policy, &mut |_| {}).unwrap();
    r.wall_secs = 0.0;
    r
}

#[test]
fn every_scenario_and_offered_policy_runs_with_invariants_checked() {
    let (mut tmem_hits, mut swap_avoided) = (0, 0);
    for s in Scenario::ALL {
        for p in Policy::ALL
            .into_iter()
            .filter(|p| p.unavailable().is_none())
        {
            let config = small(s, 3);
            let r = run(&config, p);
            assert_eq!(r.counter_checks, config.steps);
            assert_eq!(r.audits, config.steps / config.audit_every);
            assert!(r.data_checks > 0 && r.stats.accesses > 0, "{s:?} {p:?}");
            assert!(r.stats.processes > 0, "{s:?} {p:?}: no page-table churn");
            // Two frontends, a write and a read each per second (the last
            // second's writes are still mapped at the end).
            assert_eq!(r.io.reads, 2 * config.steps, "{s:?} {p:?}");
            assert_eq!(r.io.writes, 2 * (config.steps - 1), "{s:?} {p:?}");
            // Two frontends receive a flipped packet every second, or drop
            // it (no memory for the backend, or a frontend at its max).
            assert_eq!(
                r.io.flips + r.io.flips_dropped,
                2 * config.steps,
                "{s:?} {p:?}"
            );
            if p == Policy::Toolstack {
                assert!(r.stats.ballooned_in + r.stats.ballooned_out > 0, "{p:?}");
            }
            if p.uses_tmem() {
                tmem_hits += r.tmem_hits;
                swap_avoided += r.swap_avoided;
            } else {
                assert_eq!((r.tmem_gets, r.swap_avoided), (0, 0), "{s:?} {p:?}");
            }
        }
    }
    // Cleancache and frontswap served pages in these short runs.
    assert!(
        tmem_hits > 0 && swap_avoided > 0,
        "{tmem_hits} {swap_avoided}"
    );
}

/// Linux never selfballoons a guest under 16 MiB and keeps a large floor
/// under 64 MiB: the guests here are big enough to give memory back.
#[test]
fn selfballooning_guests_give_idle_memory_back() {
    let config = Config {
        host_mib: 256,
        guests: 2,
        steps: 60,
        ..small(Scenario::Consolidation, 2)
    };
    let r = run(&config, Policy::SelfBalloon);
    assert!(r.stats.ballooned_out > 0);
    assert!(r.final_free > 0);
}

#[test]
fn same_seed_same_report() {
    let config = small(Scenario::Consolidation, 9);
    assert_eq!(
        run(&config, Policy::Toolstack),
        run(&config, Policy::Toolstack)
    );
    // With tmem and grants in the run too.
    assert_eq!(
        run(&config, Policy::SelfBalloonTmem),
        run(&config, Policy::SelfBalloonTmem)
    );
    // Every policy sees the same working sets and accesses.
    assert_eq!(
        run(&config, Policy::Static).stats.accesses,
        run(&config, Policy::ToolstackTmem).stats.accesses
    );
    let other = small(Scenario::Consolidation, 10);
    assert_ne!(
        run(&config, Policy::Toolstack),
        run(&other, Policy::Toolstack)
    );
}

#[test]
fn report_figures_add_up_to_the_host() {
    let config = small(Scenario::Churn, 4);
    for p in [
        Policy::Static,
        Policy::ToolstackTmem,
        Policy::SelfBalloon,
        Policy::SelfBalloonTmem,
    ] {
        let r = run(&config, p);
        let end: u64 = r.final_pages.iter().sum();
        assert_eq!(
            end + r.final_free + r.final_tmem + r.host_frames,
            r.total_frames
        );
        assert!(r.tmem_hits <= r.tmem_gets);
        assert!(r.stats.swap_avoided + r.stats.swap_disk_writes <= r.stats.misses);
        if !p.uses_tmem() {
            assert_eq!((r.tmem_gets, r.swap_avoided, r.final_tmem), (0, 0, 0));
        }
        for s in &r.timeline {
            let held: u64 = s.pages.iter().sum();
            assert_eq!(
                held + s.free + s.tmem + r.host_frames,
                r.total_frames,
                "second {}",
                s.second
            );
        }
        assert!(r.utilization_per_mille <= r.allocated_per_mille);
        assert!(r.allocated_per_mille <= 1000);
        assert!(r.stats.misses <= r.stats.accesses);
    }
}

#[test]
fn reports_show_every_policy_as_text_json_and_svg() {
    let config = small(Scenario::Consolidation, 1);
    let outcomes: Vec<Outcome> = Policy::ALL
        .into_iter()
        .map(|p| match p.unavailable() {
            Some(why) => Outcome::Unavailable(p, why),
            None => Outcome::Ran(Box::new(run(&config, p))),
        })
        .collect();
    let text = report::text(&config, &outcomes);
    assert!(text.contains("selfballooning + tmem: at the end guests hold"));
    assert!(!text.contains("not offered"));
    assert!(text.contains("memory utilization"));
    let json = report::json(&config, &outcomes);
    assert_eq!(json.matches('{').count(), json.matches('}').count());
    assert!(!json.contains("\"available\":false"));
    assert!(json.contains("\"policy\":\"static allocation\""));
    let svg = report::svg(&config, &outcomes);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Three guests and the host's free memory, per policy; tmem's frames
    // for the two tmem policies.
    assert_eq!(svg.matches("<polyline").count(), 4 * Policy::ALL.len() + 2);
}

#[test]
fn config_ranges_are_checked() {
    let ok = Config::default();
    assert!(ok.validate().is_ok());
    for bad in [
        Config { host_mib: 8, ..ok },
        Config { guests: 0, ..ok },
        Config { guests: 64, ..ok },
        Config {
            overcommit: 0.5,
            ..ok
        },
        Config {
            overcommit: f64::NAN,
            ..ok
        },
        Config { steps: 0, ..ok },
        Config {
            host_mib: 16,
            guests: 40,
            ..ok
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn a_short_attack_campaign_breaks_no_invariant() {
    let campaign = Campaign {
        host_mib: 16,
        guests: 2,
        seed: 5,
        steps: 3000,
    };
    let summary = attack::run(&campaign, &mut |_| {}).unwrap();
    let calls: u64 = summary.results.values().sum();
    assert_eq!(calls + summary.deaths, 3000);
    assert!(summary.deaths > 0, "the attacker never died");
    // The attack reaches past the argument checks: some calls succeed.
    assert!(
        summary
            .results
            .iter()
            .any(|((n, rc), _)| *n == "mmu_update" && *rc == 0)
    );
    assert!(
        summary
            .results
            .iter()
            .any(|((n, rc), _)| *n == "mmuext_op" && *rc == 0)
    );
    // tmem puts and gets of its own succeed; grant batches are read.
    assert!(summary.results.contains_key(&("tmem_op", 1)));
    assert!(summary.results.contains_key(&("grant_table_op", 0)));
}

#[test]
fn fuzz_inputs_replay_without_violation() {
    attack::replay(&[]).unwrap();
    attack::replay(&[0, 1, 2, 200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    attack::replay(&bytes).unwrap();
}

/// Domain death under hostile state: whatever tables, pins and zombie
/// frames the attacker built, destroying it returns every frame.
#[test]
fn a_destroyed_attacker_gives_back_every_frame() {
    let mut storage = crate::host::HostStorage::new(crate::host::HostConfig::with_mib(16));
    let mut world = attack::World::new(&mut storage, 2, 7, 50).unwrap();
    let mut src = attack::Random(crate::rng::Rng::new(7));
    for _ in 0..400 {
        world.hostile_call(&mut src).unwrap();
    }
    let pinned = (0..world.host.total_frames())
        .map(|i| hvmem_types::Mfn::new(world.host.first_mfn().get() + i))
        .filter(|&m| world.host.frame_table().state(m).unwrap().pinned)
        .count();
    assert!(pinned > 0, "the attack pinned nothing");
    let tmem_pages = |w: &attack::World<'_>| {
        let t = w.host.tmem();
        t.client_of(attack::ATTACKER)
            .map_or(0, |c| t.client_stats(c).map_or(0, |s| s.pages))
    };
    // Go on until the attacker holds tmem pages too.
    for _ in 0..5000 {
        if tmem_pages(&world) > 0 {
            break;
        }
        world.hostile_call(&mut src).unwrap();
    }
    assert!(tmem_pages(&world) > 0, "the attack put nothing in tmem");
    let deaths = world.deaths;
    let tmem_before = world.host.tmem_frames();
    let held = tmem_pages(&world);
    assert!(world.hostile_call(&mut attack::Bytes(&[u8::MAX])).unwrap());
    assert_eq!(world.deaths, deaths + 1);
    // Its tmem pages went with it (the reborn attacker has an empty client).
    assert_eq!(world.host.tmem_frames(), tmem_before - held);
    assert_eq!(tmem_pages(&world), 0);
    world.audit().unwrap();
}
