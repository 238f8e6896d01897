"""Model code as Hub checkpoints ship it (`trust_remote_code`). Each modeling module here is pure remote
code (it imports only transformers) and is copied into every checkpoint it writes; this package registers
its classes, as a user's script that saves such a model would."""

from transformers import AutoConfig, AutoModelForCausalLM

from conformance.model.families.remote.modeling_legacy_llama import LegacyLlamaConfig, LegacyLlamaForCausalLM

# save_pretrained then copies the modeling file and writes auto_map, as a Hub repository holds them.
LegacyLlamaConfig.register_for_auto_class()
LegacyLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
# from_config of a config built here (it has no auto_map before a save) finds the class too.
AutoConfig.register("legacy_llama", LegacyLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(LegacyLlamaConfig, LegacyLlamaForCausalLM, exist_ok=True)
