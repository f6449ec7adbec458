"""The pytest plugin of kube-harness, registered through the ``pytest11`` entry point.

It is loaded into every pytest run of an environment where kube-harness is
installed. The options and fixtures that run experiments against a cluster
are added here as those capabilities land; until then the plugin adds nothing.
"""
