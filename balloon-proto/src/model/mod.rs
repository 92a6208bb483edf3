//! Exhaustive model checking of the machines wired together (stateright).
//!
//! Each model composes the real state machines of this crate (not copies
//! of them) on small memory sizes and lets stateright explore every
//! interleaving of their events. Properties are `always` invariants
//! (conservation, bounds, no honest input refused), deadlock freedom (a
//! state with no enabled action is a converged one), and an `eventually`
//! liveness property (every domain reaches its target).
//!
//! stateright checks `eventually` properties on terminal paths only, and a
//! revisited state is not treated as a loop. So each model is built without
//! cycles (retries are counted, targets change finitely often), and
//! [`assert_acyclic`] proves it with a depth-first search over the same
//! state graph. Then "every maximal path ends in a terminal state, and every
//! terminal state is converged" is exactly eventual convergence.
//!
//! Each model also has mutations that break one rule on purpose; a test per
//! mutation checks that the checker reports the property it breaks, so the
//! properties are known to be able to fail.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod virtio;
mod xen;

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::vec::Vec;

use stateright::{Checker, Model};

/// Explores every state of `model` and returns the checker's counts.
/// Panics with the counterexample if a property fails.
pub(crate) fn check<M>(name: &str, model: M) -> usize
where
    M: Model + Send + Sync + 'static,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Debug + Clone + PartialEq,
{
    let checker = model.checker().spawn_bfs().join();
    std::println!(
        "{name}: {} states explored, {} unique, max depth {}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker.assert_properties();
    checker.unique_state_count()
}

/// The names of the properties the checker found a counterexample for.
pub(crate) fn violations<M>(model: M) -> Vec<&'static str>
where
    M: Model + Send + Sync + 'static,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Debug + Clone + PartialEq,
{
    let properties: Vec<_> = model.properties().iter().map(|p| p.name).collect();
    let checker = model.checker().spawn_bfs().join();
    let mut found: Vec<_> = properties
        .into_iter()
        .filter(|p| checker.discovery(p).is_some())
        .collect();
    found.sort_unstable();
    found
}

/// Whether a state has an enabled action.
pub(crate) fn has_successor<M: Model>(model: &M, state: &M::State) -> bool {
    let mut actions = Vec::new();
    model.actions(state, &mut actions);
    actions
        .into_iter()
        .any(|a| model.next_state(state, a).is_some())
}

/// Panics if the state graph of `model` has a cycle (self-loops included);
/// returns the number of states.
pub(crate) fn assert_acyclic<M>(model: &M) -> usize
where
    M: Model,
    M::State: Debug + Hash + Eq + Clone,
{
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        OnStack,
        Done,
    }
    let mut colour: HashMap<M::State, Colour> = HashMap::new();
    for init in model.init_states() {
        if colour.contains_key(&init) {
            continue;
        }
        // Each frame: a state and its successors still to visit.
        let mut stack: Vec<(M::State, Vec<M::State>)> = Vec::new();
        colour.insert(init.clone(), Colour::OnStack);
        let next = model.next_states(&init);
        stack.push((init, next));
        while let Some((state, successors)) = stack.last_mut() {
            match successors.pop() {
                Some(s) => match colour.get(&s) {
                    Some(Colour::OnStack) => panic!("cycle through {s:?}"),
                    Some(Colour::Done) => {}
                    None => {
                        colour.insert(s.clone(), Colour::OnStack);
                        let next = model.next_states(&s);
                        stack.push((s, next));
                    }
                },
                None => {
                    colour.insert(state.clone(), Colour::Done);
                    stack.pop();
                }
            }
        }
    }
    colour.len()
}
