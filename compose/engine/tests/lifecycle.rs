//! The engine's lifecycle with a rule of its own: the scheduler, the key
//! walk and the store serve any `Rule`, not only Kiln's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kiln_engine::{
    graph, Context, DepKind, Deps, Event, Events, Exec, Executed, Failure, KeyInputs, NodeError,
    NodeResult, Options, Rule, Rules,
};
use kiln_store::Store;

/// Writes `text` plus what its dependencies made into `out/<name>`.
struct Echo {
    text: String,
    fail: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("echo failed on purpose")]
struct Broken;
impl Failure for Broken {}

impl Rule for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }
    fn key_inputs(&self, deps: &Deps) -> Result<KeyInputs, NodeError> {
        let deps: BTreeMap<&String, &String> = deps.iter().map(|(n, d)| (n, &d.output)).collect();
        Ok(KeyInputs::new("echo-v1", &(&self.text, deps))?)
    }
    fn execute(&self, exec: &Exec<'_>) -> Result<Executed, NodeError> {
        if self.fail {
            return Err(Broken.into());
        }
        let mut text = self.text.clone();
        for (dep, (_, output)) in exec.deps {
            let dir = exec.store.materialize(output).expect("dep output");
            text.push_str(&std::fs::read_to_string(dir.join(dep)).expect("dep file"));
        }
        std::fs::write(exec.out.join(exec.name), text).expect("write");
        std::fs::write(exec.log, "==> [step 1/1] echo\n").expect("log");
        Ok(Executed::default())
    }
    fn describe(&self) -> (&'static str, serde_json::Value) {
        ("echo", serde_json::json!(self.text))
    }
    fn version(&self) -> &str {
        "1"
    }
}

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);
impl Events for Seen {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::Cached { recipe, .. } => format!("cached {recipe}"),
            Event::Built { recipe, .. } => format!("built {recipe}"),
            Event::Failed { recipe, .. } => format!("failed {recipe}"),
            Event::Skipped { recipe, .. } => format!("skipped {recipe}"),
            _ => return,
        };
        self.0.lock().expect("events").push(line);
    }
}

fn run(store: &Store, texts: &[(&str, &str, bool)]) -> (Vec<String>, BTreeMap<String, NodeResult>) {
    // a ← b ← c: c build-depends on b, b on a.
    let mut decls = BTreeMap::new();
    decls.insert("a".to_string(), vec![]);
    decls.insert("b".to_string(), vec![("a".to_string(), DepKind::Build)]);
    decls.insert("c".to_string(), vec![("b".to_string(), DepKind::Build)]);
    let plan = graph::plan(&decls, &["c".to_string()]).expect("plan");
    let mut rules = Rules::new();
    for (name, text, fail) in texts {
        let rule: Arc<dyn Rule> = Arc::new(Echo {
            text: text.to_string(),
            fail: *fail,
        });
        rules.insert(name.to_string(), rule);
    }
    let ctx = Context {
        board: "test",
        plan: &plan,
        rules: &rules,
        store,
        remote: None,
    };
    let seen = Seen::default();
    let opts = Options {
        jobs: 2,
        keep_going: false,
    };
    let report = kiln_engine::run(&ctx, &opts, &seen);
    let mut events = seen.0.into_inner().expect("events");
    events.sort();
    (events, report.results)
}

#[test]
fn any_rule_is_built_cached_cut_off_and_failed_alike() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("store");
    let nodes = [("a", "A", false), ("b", "B", false), ("c", "C", false)];

    let (first, results) = run(&store, &nodes);
    assert_eq!(first, ["built a", "built b", "built c"]);
    let out = store
        .materialize(&results["c"].output().expect("c's output"))
        .expect("materialize");
    assert_eq!(std::fs::read_to_string(out.join("c")).expect("c"), "CBA");
    // The engine keeps each node's log and key inputs where the store says.
    assert!(store.log_path("test", "b").is_file());
    assert!(store.inputs_path("test", "b").is_file());

    let (second, _) = run(&store, &nodes);
    assert_eq!(second, ["cached a", "cached b", "cached c"]);

    // b's key changes; its output is new, so c is rebuilt; a is not.
    let changed = [("a", "A", false), ("b", "B2", false), ("c", "C", false)];
    let (third, _) = run(&store, &changed);
    assert_eq!(third, ["built b", "built c", "cached a"]);

    // A failing rule leaves no action-cache entry and skips its dependents.
    let broken = [("a", "A", false), ("b", "B3", true), ("c", "C", false)];
    let (fourth, results) = run(&store, &broken);
    assert_eq!(fourth, ["cached a", "failed b", "skipped c"]);
    let key = results["b"].key().expect("b was keyed");
    assert_eq!(store.ac_get(&key).expect("ac"), None);
    assert!(
        std::fs::read_dir(store.work_dir())
            .expect("work")
            .next()
            .is_none(),
        "the failed node's work directory is gone"
    );
}
