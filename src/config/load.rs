//! placeholder
use super::*;
use std::path::Path;
/// Loads a file.
pub fn load(_path: &Path, _env: &dyn Env) -> Result<Config, ConfigError> { Err(ConfigError::single(None, "", "unimplemented")) }
/// Parses text.
pub fn from_yaml_str(_text: &str, _env: &dyn Env, _origin: ConfigOrigin, _base_dir: &Path) -> Result<Config, ConfigError> { Err(ConfigError::single(None, "", "unimplemented")) }
pub(super) fn builtin(_env: &dyn Env) -> Result<Config, ConfigError> { Err(ConfigError::single(None, "", "unimplemented")) }
