"""Model zoo: iResNet trunks, BTNet, DCR, MobileFaceNet (see mrface.models.get_model)."""
