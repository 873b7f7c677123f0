//! What every command starts from: the project, its settings, the store,
//! and an evaluated board with its plan and rules.

use std::path::{Path, PathBuf};

use kiln_engine::{Plan, Rules};
use kiln_fetch::Mirror;
use kiln_model::{Diagnostics, Evaluation, Project, Span};
use kiln_rules::Setup;
use kiln_store::Store;

use super::{cache, Cli, Config, Failure};

pub(super) struct Session {
    pub(super) project: Project,
    pub(super) config: Config,
    pub(super) store_root: PathBuf,
    pub(super) mirrors: Vec<Mirror>,
    pub(super) offline: bool,
    pub(super) json: bool,
    pub(super) remote: cache::RemoteFlags,
}

impl Session {
    pub(super) fn open(cli: &Cli) -> Result<Session, Failure> {
        let project = match &cli.project {
            Some(p) => Project::at(
                p.canonicalize()
                    .map_err(|e| Failure::usage(format!("error: project {}: {e}", p.display())))?,
            ),
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| Failure::usage(format!("error: current directory: {e}")))?;
                Project::discover(&cwd).ok_or_else(|| {
                    Failure::usage(format!(
                        "error: no kiln.toml in {} or any parent directory\n  = help: run kiln inside a Kiln project, or pass --project DIR",
                        cwd.display()
                    ))
                })?
            }
        };
        let config_path = project.root.join("kiln.toml");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Failure::usage(format!("error: cannot read {}: {e}", config_path.display()))
        })?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| Failure::usage(format!("error: {}: {e}", config_path.display())))?;
        let store_root = match &cli.store {
            Some(s) => s.clone(),
            None => Store::default_root().map_err(|e| Failure::usage(format!("error: {e}")))?,
        };
        let mut specs: Vec<String> = cli.mirrors.clone();
        if let Ok(env) = std::env::var("KILN_MIRRORS") {
            specs.extend(
                env.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        specs.extend(config.mirrors.iter().cloned());
        if let Some(home) = std::env::var_os("HOME") {
            let default = Path::new(&home).join(".cache/kiln-mirror");
            if default.is_dir() {
                specs.push(default.display().to_string());
            }
        }
        let mirrors = specs
            .iter()
            .map(|s| {
                let expanded = expand_home(s);
                Mirror::parse(&expanded).map_err(|e| Failure::usage(format!("error: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Session {
            project,
            config,
            store_root,
            mirrors,
            offline: cli.offline,
            json: cli.json,
            remote: cache::RemoteFlags {
                url: cli.cache_url.clone(),
                read_only: cli.cache_read_only,
                disabled: cli.no_remote,
                signing_key: cli.signing_key.clone(),
                trusted: cli.trusted_keys.clone(),
            },
        })
    }

    pub(super) fn store(&self) -> Result<Store, Failure> {
        Store::open(&self.store_root).map_err(|e| {
            Failure::usage(format!(
                "error: cannot open the store at {}: {e}",
                self.store_root.display()
            ))
        })
    }

    pub(super) fn board_name(&self, given: Option<&str>) -> Result<String, Failure> {
        given
            .map(String::from)
            .or_else(|| std::env::var("KILN_BOARD").ok())
            .or_else(|| self.config.default_board.clone())
            .ok_or_else(|| {
                Failure::usage(
                    "error: which board? pass --board NAME (or set default_board in kiln.toml)",
                )
            })
    }

    pub(super) fn evaluate(&self, board: &str) -> Result<Evaluation, Failure> {
        let path = self.project.board_path(board);
        if !path.is_file() {
            let known: Vec<String> = self
                .project
                .board_files()
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
                .collect();
            return Err(Failure::usage(format!(
                "error: no board `{board}` ({} does not exist)\n  = help: boards here: {}",
                path.display(),
                known.join(", ")
            )));
        }
        let eval = kiln_dsl::evaluate(&self.project, &path).map_err(|d| self.diagnostics(d))?;
        kiln_rules::check(&eval).map_err(|d| self.diagnostics(d))?;
        Ok(eval)
    }

    pub(super) fn diagnostics(&self, d: Diagnostics) -> Failure {
        let n = d.0.len();
        Failure::usage(format!(
            "{}\nkiln: {n} error{} in recipes or boards",
            d.render(&self.project.root),
            if n == 1 { "" } else { "s" }
        ))
    }

    /// Evaluates `board` and plans `what`, with every node's rule.
    pub(super) fn load(
        &self,
        board: &str,
        what: &Roots,
        print_outputs: bool,
    ) -> Result<Loaded, Failure> {
        let eval = self.evaluate(board)?;
        let (roots, image) = match what {
            Roots::Board { image } => (kiln_rules::board_roots(&eval), *image),
            Roots::Nodes(names) => {
                let mut roots = Vec::new();
                let mut image = false;
                for n in names {
                    if n == kiln_rules::IMAGE {
                        image = true;
                        roots.extend(kiln_rules::board_roots(&eval));
                    } else {
                        roots.extend(recipe_root(self, &eval, n)?);
                    }
                }
                (roots, image)
            }
        };
        let plan = kiln_rules::plan(&eval, &roots, image).map_err(|d| self.diagnostics(d))?;
        let store = self.store()?;
        let helper = std::env::current_exe()
            .map_err(|e| Failure::usage(format!("error: cannot find the kiln executable: {e}")))?;
        let setup = Setup {
            mirrors: self.mirrors.clone(),
            offline: self.offline,
            sandbox_helper: helper,
            print_outputs,
        };
        let rules = kiln_rules::rules(&self.project, &eval, &plan, &store, &setup)
            .map_err(|e| Failure::usage(format!("error: {e}")))?;
        Ok(Loaded {
            eval,
            plan,
            rules,
            store,
        })
    }
}

/// Which nodes a command is about.
pub(super) enum Roots {
    /// A board's packages, kernel and bootloader, and its image if asked.
    Board { image: bool },
    /// Nodes by name: recipes, or `image`.
    Nodes(Vec<String>),
}

/// An evaluated board, planned, with every node's rule.
pub(super) struct Loaded {
    pub(super) eval: Evaluation,
    pub(super) plan: Plan,
    pub(super) rules: Rules,
    pub(super) store: Store,
}

pub(super) fn expand_home(s: &str) -> String {
    match (s.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => s.to_string(),
    }
}

pub(super) fn recipe_root(
    s: &Session,
    eval: &Evaluation,
    recipe: &str,
) -> Result<Vec<(String, Span)>, Failure> {
    if !eval.recipes.contains_key(recipe) {
        // A command-line mistake, not a place in a file: no span to show.
        let boards: Vec<String> = s
            .project
            .board_files()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_stem().map(|n| n.to_string_lossy().to_string()))
            .collect();
        let names = eval
            .recipes
            .keys()
            .map(String::as_str)
            .chain(boards.iter().map(String::as_str));
        let hint = match kiln_model::did_you_mean(recipe, names) {
            Some(m) => format!("did you mean `{m}`?"),
            None => format!(
                "recipes: {}; boards: {}",
                eval.recipes.keys().cloned().collect::<Vec<_>>().join(", "),
                boards.join(", ")
            ),
        };
        return Err(Failure::usage(format!(
            "error: `{recipe}` is neither a recipe in {} nor a board in {}\n  = help: {hint}",
            s.project.rel(&s.project.recipes_dir()).display(),
            s.project.rel(&s.project.boards_dir()).display(),
        )));
    }
    Ok(vec![(
        recipe.to_string(),
        eval.recipes[recipe].span.clone(),
    )])
}

/// Whether a build target names a board rather than a recipe.
pub(super) fn is_board(s: &Session, target: &str) -> bool {
    target.ends_with(".rhai") || s.project.board_path(target).is_file()
}
