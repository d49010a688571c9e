"""Write the distance/RW maps of nnU-Net's preprocessed cases (see ``nnunet_losses.nnunet.setup_maps``).

    python setup_maps.py -d DATASET -c CONFIGURATION [CONFIGURATION ...] [-p PLANS] [--maps ...] [-np N]
"""
import sys

from nnunet_losses.nnunet.setup_maps import main

if __name__ == "__main__":
    sys.exit(main())
