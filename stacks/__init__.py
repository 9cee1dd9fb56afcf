"""The CDK app's constructs: one per capability, composed by `mirror_stack.MirrorStack`."""
