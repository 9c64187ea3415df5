# configs/ is installed as the package fashionbench.configs (see pyproject.toml), so Hydra finds
# it as pkg://fashionbench.configs from any working directory, installed or editable.
