//! A board's `overrides`: a map deep-merges into the recipe's map, a
//! function replaces it with what it returns (like a bbappend, or a Nix
//! overlay). Applied to the evaluated maps, before conversion, so an error
//! in an overridden field points at the board.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_model::{did_you_mean, Diagnostic, Override};
use rhai::{Dynamic, FnPtr, Map};

use crate::convert;
use crate::locate::Seg;
use crate::script::{eval_error, map_of, Script};

/// What applying a board's overrides did.
pub(crate) struct Applied {
    /// For each overridden recipe, the field path of its override in the board.
    pub(crate) paths: BTreeMap<String, Vec<Seg>>,
    /// What the board records of them, for `kiln show`.
    pub(crate) overrides: Vec<Override>,
}

/// Applies the board's overrides to the recipes' maps.
pub(crate) fn apply(
    board_script: &Script,
    board_map: &Map,
    by_name: &mut BTreeMap<String, (PathBuf, Script)>,
    errors: &mut Vec<Diagnostic>,
) -> Applied {
    let mut recorded = Vec::new();
    let mut overridden: BTreeMap<String, Vec<Seg>> = BTreeMap::new();
    if let Some(overrides) = board_map
        .get("overrides")
        .and_then(|o| o.read_lock::<Map>().map(|m| m.clone()))
    {
        for (name, change) in overrides {
            let name = name.to_string();
            let path = vec![Seg::Key("overrides".into()), Seg::Key(name.clone())];
            let span = board_script.loc.key(&path);
            let Some((_, script)) = by_name.get_mut(&name) else {
                let mut d = Diagnostic::new(span, format!("override for unknown recipe `{name}`"));
                if let Some(s) = did_you_mean(&name, by_name.keys().map(String::as_str)) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                errors.push(d);
                continue;
            };
            if let Some(fp) = change.read_lock::<FnPtr>().map(|f| f.clone()) {
                match fp.call::<Dynamic>(
                    &board_script.engine,
                    &board_script.ast,
                    (script.value.clone(),),
                ) {
                    Ok(v) if v.is_map() => script.value = v,
                    Ok(v) => errors.push(
                        Diagnostic::new(
                            span,
                            format!(
                                "override function for `{name}` returned {}, not a map",
                                convert::type_name(&v)
                            ),
                        )
                        .help("return the (changed) recipe map from the function"),
                    ),
                    Err(e) => errors.push(eval_error(board_script.loc.file(), &e)),
                }
            } else if let Some(m) = change.read_lock::<Map>() {
                let mut base = map_of(&script.value);
                deep_merge(&mut base, &m);
                script.value = Dynamic::from_map(base);
            } else {
                errors.push(
                    Diagnostic::new(
                        span,
                        format!(
                            "override for `{name}` is {}, expected a map or a function",
                            convert::type_name(&change)
                        ),
                    )
                    .help("write `name: #{ field: value }` or `name: |r| { ...; r }`"),
                );
                continue;
            }
            recorded.push(Override {
                recipe: name.clone(),
                span: board_script.loc.key(&path),
            });
            overridden.insert(name, path);
        }
    }

    Applied {
        paths: overridden,
        overrides: recorded,
    }
}

/// Maps merge key by key; anything else in `change` replaces what was there.
fn deep_merge(base: &mut Map, change: &Map) {
    for (k, v) in change {
        let merged = match (base.get_mut(k), v.read_lock::<Map>()) {
            (Some(existing), Some(vm)) if existing.is_map() => {
                let mut em = map_of(existing);
                deep_merge(&mut em, &vm);
                Some(Dynamic::from_map(em))
            }
            _ => None,
        };
        base.insert(k.clone(), merged.unwrap_or_else(|| v.clone()));
    }
}
