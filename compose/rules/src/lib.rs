//! Kiln's rules: what each kind of node is, and how an evaluated board
//! becomes the engine's plan. The engine (`kiln-engine`) knows nothing of
//! recipes or images; this crate is the only place that knows both.
//!
//! - [`recipe::RecipeRule`]: a component built from its sources in a sandbox.
//! - [`image::ImageRule`]: the board's disk image.
//! - [`debs::DebsRule`]: a locked set of Debian binary packages, unpacked.
//!
//! A new kind of node is a new module here with a type implementing
//! [`kiln_engine::Rule`], declared by [`plan`] and made by [`rules`].

pub mod debs;
mod diagnose;
pub mod image;
pub mod recipe;
pub mod toolchain;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_engine::{DepKind, Plan, Rule, Rules};
use kiln_fetch::Mirror;
use kiln_model::{Diagnostic, Diagnostics, Evaluation, Project, Span};
use kiln_store::Store;

pub use image::IMAGE;
use recipe::{RecipeRule, Toolbox};
pub use toolchain::ToolchainError;

/// What a board build roots at: its packages, its kernel and its
/// bootloader, each with where it was named. The image, when asked for,
/// is added by [`plan`].
pub fn board_roots(eval: &Evaluation) -> Vec<(String, Span)> {
    let b = &eval.board;
    let mut roots: Vec<(String, Span)> = b
        .packages
        .iter()
        .map(|p| {
            let span = b.package_spans.get(p).cloned();
            (p.clone(), span.unwrap_or_else(|| b.span.clone()))
        })
        .collect();
    let boot = b.kernel.iter().map(|k| (&k.recipe, &k.span));
    let boot = boot.chain(b.bootloader.iter().map(|l| (&l.recipe, &l.span)));
    for (name, span) in boot {
        if !roots.iter().any(|(n, _)| n == name) {
            roots.push((name.clone(), span.clone()));
        }
    }
    roots
}

/// Plans `roots` (recipes, with where each was asked for) and, with
/// `image`, the board's image after them. Errors point at the recipe or
/// board line that named the missing or cyclic dependency.
pub fn plan(eval: &Evaluation, roots: &[(String, Span)], image: bool) -> Result<Plan, Diagnostics> {
    // The build environment and the toolchain's build dependencies (the
    // target's C library and compiler) are every recipe's build
    // dependencies: its steps run with the one as /usr and compile with
    // the others. A package set needs none, and the toolchain's own
    // recipes don't build with themselves.
    let tc = &eval.board.toolchain;
    let mut decls: BTreeMap<String, Vec<(String, DepKind)>> = eval
        .recipes
        .values()
        .map(|r| {
            let toolchain = tc
                .build_deps
                .iter()
                .filter(|_| !tc.build_deps.contains(&r.name));
            let given = tc.usr.iter().chain(toolchain);
            let given = given.filter(|_| r.debs.is_empty());
            let deps = r
                .build_deps
                .iter()
                .chain(given)
                .map(|d| (d.clone(), DepKind::Build))
                .chain(r.runtime_deps.iter().map(|d| (d.clone(), DepKind::Runtime)))
                .collect();
            (r.name.clone(), deps)
        })
        .collect();
    let names: Vec<String> = roots.iter().map(|(n, _)| n.clone()).collect();
    let errors = |e| Diagnostics(diagnose::graph_errors(eval, roots, e));
    let recipes = kiln_engine::graph::plan(&decls, &names).map_err(errors)?;
    if !image {
        return Ok(recipes);
    }
    let b = &eval.board;
    let mut needs = recipes.runtime_closure(&b.packages);
    needs.extend(b.kernel.iter().map(|k| k.recipe.clone()));
    needs.extend(b.bootloader.iter().map(|l| l.recipe.clone()));
    // With a build environment, the image's strip comes from it.
    needs.extend(b.toolchain.usr.iter().cloned());
    needs.sort();
    needs.dedup();
    decls.insert(
        IMAGE.to_string(),
        needs.into_iter().map(|n| (n, DepKind::Build)).collect(),
    );
    let mut names = names;
    names.push(IMAGE.to_string());
    kiln_engine::graph::plan(&decls, &names).map_err(errors)
}

/// How this invocation builds, for the rules that need it.
#[derive(Clone, Debug)]
pub struct Setup {
    pub mirrors: Vec<Mirror>,
    pub offline: bool,
    /// The `kiln` executable, re-run as `kiln __sandbox SPEC`.
    pub sandbox_helper: PathBuf,
    /// Print the output paths of requested recipes (`kiln build <recipe>`).
    pub print_outputs: bool,
}

/// The rule of every node in `plan`. Fingerprints the board's toolchain
/// (memoised in the store).
pub fn rules(
    project: &Project,
    eval: &Evaluation,
    plan: &Plan,
    store: &Store,
    setup: &Setup,
) -> Result<Rules, ToolchainError> {
    let board = &eval.board;
    // A build environment's tools are named by its output digest, which is
    // in every key; only the host's tools need fingerprinting.
    let fingerprint = match &board.toolchain.usr {
        Some(_) => kiln_model::Fingerprint {
            tools: BTreeMap::new(),
            host_paths: Vec::new(),
        },
        None => toolchain::fingerprint(&board.toolchain, &board.target, store)?,
    };
    let cc = toolchain::c_compiler(&board.toolchain, &board.target)?;
    let toolbox = Arc::new(Toolbox {
        target: board.target.clone(),
        fingerprint: fingerprint.clone(),
        base_env: toolchain::base_env(&board.toolchain, &board.target, &cc),
        host_paths: board.toolchain.host_paths.clone(),
        mirrors: setup.mirrors.clone(),
        offline: setup.offline,
        sandbox_helper: setup.sandbox_helper.clone(),
        usr: board.toolchain.usr.clone(),
        links: project.root.join("out").join(&board.name),
        print_outputs: setup.print_outputs,
    });
    let mut rules = Rules::new();
    for name in &plan.order {
        let rule: Arc<dyn Rule> = if name == IMAGE {
            let rootfs = plan.runtime_closure(&board.packages);
            Arc::new(image::ImageRule::new(
                board,
                project.rel(&board.span.file).display().to_string(),
                |n| eval.recipes.get(n).cloned(),
                &rootfs,
                fingerprint.clone(),
                &project.root,
            ))
        } else if let Some(r) = eval.recipes.get(name) {
            if r.debs.is_empty() {
                Arc::new(RecipeRule::new(r.clone(), toolbox.clone()))
            } else {
                Arc::new(debs::DebsRule::new(r.clone(), toolbox.clone()))
            }
        } else {
            continue;
        };
        rules.insert(name.clone(), rule);
    }
    Ok(rules)
}

/// What a board asks of its recipes beyond their own fields: that none is
/// named like the image node, and that the bootloader can boot the image
/// ([`kiln_image::policy::bootloader_needs`]), asked at evaluation rather
/// than found out as a hang in QEMU.
pub fn check(eval: &Evaluation) -> Result<(), Diagnostics> {
    let mut errors = Vec::new();
    if let Some(r) = eval.recipes.get(IMAGE) {
        errors.push(
            Diagnostic::new(
                r.span.clone(),
                format!(
                    "a recipe can't be named `{IMAGE}`: that is the name of the board's image node"
                ),
            )
            .help("rename the recipe (and the build_deps and packages that name it)"),
        );
    }
    let board = &eval.board;
    for dep in &board.toolchain.build_deps {
        if !eval.recipes.contains_key(dep) {
            errors.push(
                Diagnostic::new(
                    board.span.clone(),
                    format!("the toolchain's `build_deps` names `{dep}`, which is no recipe"),
                )
                .help("name recipes every build needs, like recipes/libc-dev.rhai and recipes/target-gcc.rhai"),
            );
        }
    }
    if let Some(usr) = &board.toolchain.usr {
        let problem = match eval.recipes.get(usr) {
            None => Some(format!(
                "the toolchain's `usr` names `{usr}`, which is no recipe"
            )),
            Some(r) if r.debs.is_empty() => Some(format!(
                "the toolchain's `usr` names `{usr}`, which is not a package set (it has no `debs`)"
            )),
            Some(_) => None,
        };
        if let Some(message) = problem {
            errors.push(
                Diagnostic::new(board.span.clone(), message)
                    .help("name a recipe with a `debs` lock, like recipes/build-env.rhai"),
            );
        }
    }
    if let Some(b) = &board.bootloader {
        if let Some(r) = eval.recipes.get(&b.recipe) {
            let layout = kiln_image::policy::layout(&board.partitions);
            for (need, what) in kiln_image::policy::bootloader_needs(&layout) {
                if !r.provides.contains(&need) {
                    errors.push(
                        Diagnostic::new(
                            b.span.clone(),
                            format!(
                                "bootloader recipe `{}` does not provide `{need}`: it can't do {what}",
                                r.name
                            ),
                        )
                        .note(
                            r.span.clone(),
                            format!("`{}` provides: [{}]", r.name, r.provides.join(", ")),
                        )
                        .help(format!(
                            "use a bootloader recipe that provides `{need}`, or change the board's partitions"
                        )),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics(errors))
    }
}
