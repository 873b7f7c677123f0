//! Turns the maps scripts evaluate to into the plain `model` types.
//!
//! Every field is checked for name and type, and every problem is reported
//! with the line it was written on — all of them, not just the first, since a
//! round trip per typo is exactly the slow feedback Kiln exists to avoid.

mod board;
mod fields;
mod lock;
mod recipe;

pub use board::{board, target, ARCHES, BOARD_FIELDS, KCONFIG_DIR};
pub use fields::{type_name, Fields};
pub use recipe::{recipe, valid_name, RECIPE_FIELDS};
