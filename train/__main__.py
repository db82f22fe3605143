"""`accelerate launch -m train --config RECIPE.yaml [overrides]`: parse, then train.grpo.main."""

import sys

from train.grpo import cli

if __name__ == "__main__":
    sys.exit(cli())
