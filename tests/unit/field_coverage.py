"""Which tests show the effect of each MistralModel CRD field, printer column and condition type.

No field is accepted and ignored: each is in the CRD because something honours it, and
the tests named here show it (a pod, a plan or a refusal that the field changes).
tests/unit/test_field_coverage.py fails when the CRD has a field, column or condition
type this map does not name, when the map names one that no longer exists, or when a
named test does not exist.

Keys: spec fields as dotted paths from `spec`, with `[]` for the items of a list
(sections are covered by their fields); printer columns by name; condition types by
type. Values: pytest node ids relative to the repository root, optionally with one
parametrized id (`...::test_x[id]`) where that id is written in the test file.
"""

from __future__ import annotations

from collections.abc import Mapping

_ENV = ("tests/unit/test_render_options.py::test_env_values_and_references_are_passed_as_written",)
_RESOURCES = (
    "tests/unit/test_render_options.py::test_resource_requests_and_limits_are_added_to_the_gpus",
)
_TOLERATIONS = (
    "tests/unit/test_render_options.py::test_tolerations_are_rendered_and_let_groups_onto_tainted_nodes",
)
_RDMA = (
    "tests/unit/test_render_options.py::test_rdma_options_become_env_capabilities_and_device_requests",
)
_IMAGE = (
    "tests/unit/test_render_options.py::test_image_pull_policy_and_pull_secrets_reach_every_pod",
)
_CLAIM_FILL_JOB = (
    "tests/unit/test_cache_plan.py::"
    "test_the_claims_fill_job_runs_the_same_program_unpinned_with_the_claim_read_write"
)
_SHARED_PVC = (
    "tests/unit/test_render_options.py::test_shared_pvc_cache_mounts_the_claim_and_reads_under_the_sub_path",
    "tests/unit/test_cache_plan.py::test_a_shared_claim_gets_one_fill_and_no_group_is_created_meanwhile",
    _CLAIM_FILL_JOB,
    "tests/integration/test_cache_shared.py::"
    "test_a_shared_claim_is_filled_once_then_groups_start_and_nobody_fills_it_again",
)
_PARALLELISM = "tests/unit/test_render_options.py::test_parallelism_fields_become_sglang_flags"
_CAPABILITIES = "tests/unit/test_render_options.py::test_capabilities_turned_off_drop_their_parsers"
_PROFILE_RULES = "tests/unit/test_api_models.py::test_profile_capabilities_and_context_are_enforced"
_HUB = (
    "tests/unit/test_render_options.py::"
    "test_without_a_cache_pods_read_the_hub_at_the_pinned_revision_with_the_token"
)
_IMMUTABLE = "tests/integration/test_api_crd.py::test_immutable_field_edit_is_refused"
_AUTOSCALING_BOUNDS = "tests/unit/test_reconcile_core.py::test_autoscaling_starts_within_bounds"
_SCALER = "tests/unit/test_autoscaler.py::"
_SCALING = "tests/unit/test_scaling_plan.py::"
_MIN_REPLICAS = (
    "tests/unit/test_policy_fields.py::test_min_replicas_raises_the_group_count_while_autoscaling"
)
_MAX_UNAVAILABLE = (
    "tests/unit/test_policy_fields.py::"
    "test_max_unavailable_lets_an_old_group_go_before_its_replacement_serves"
)
_SURGE = (
    "tests/unit/test_reconcile_core.py::test_spec_change_surges_a_new_group_before_removing_the_old"
)
_BUDGET = "tests/unit/test_rollout_budget.py::test_budget_in_groups"
_ROLLOUT = "tests/unit/test_rollout_core.py::"
_DEADLINE = (
    "tests/unit/test_reconcile_core.py::"
    "test_a_change_that_makes_no_progress_passes_its_deadline_once"
)
_RECREATE = (
    "tests/unit/test_reconcile_core.py::"
    "test_failed_rank_tears_down_the_group_and_recreates_it_after_backoff"
)
_COLUMNS_FILLED = (
    "tests/unit/test_status_report.py::test_status_fields_behind_the_printer_columns_are_filled"
)
_COLUMNS_DECLARED = "tests/unit/test_crd_schema.py::test_printer_columns"
_SHAPES = "tests/unit/test_shapes.py"
_CEL_TWINS = f"{_SHAPES}::test_cel_rules_and_their_python_checks_agree"
_COLUMNS_SHOWN = "tests/integration/test_api_crd.py::test_get_shows_printer_columns"

SPEC_FIELDS: Mapping[str, tuple[str, ...]] = {
    "spec.model.profile": (
        "tests/unit/test_render_options.py::test_profile_sets_the_served_name_context_and_group_shape",
        _IMMUTABLE,
    ),
    "spec.model.source": (
        "tests/unit/test_render_options.py::test_a_pvc_source_without_a_cache_mounts_the_claim",
        "tests/unit/test_render_options.py::test_an_s3_source_without_a_cache_is_refused_naming_the_field",
    ),
    "spec.model.revision": (_HUB,),
    "spec.model.servedName": (
        "tests/unit/test_render_options.py::test_served_name_is_what_clients_send",
    ),
    "spec.model.quantization": (
        "tests/unit/test_render_options.py::test_fp8_quantization_and_extra_args_are_rendered_on_every_rank",
    ),
    "spec.model.credentialsSecretRef.name": (
        _HUB,
        "tests/unit/test_api_models.py::test_credentials_are_refused_where_nothing_reads_them",
    ),
    "spec.runtime.image": _IMAGE,
    "spec.runtime.imagePullPolicy": _IMAGE,
    "spec.runtime.imagePullSecrets[].name": _IMAGE,
    "spec.runtime.extraArgs": (
        "tests/unit/test_render_options.py::test_fp8_quantization_and_extra_args_are_rendered_on_every_rank",
        "tests/unit/test_api_models.py::test_extra_args_may_not_override_rendered_flags",
    ),
    "spec.runtime.env[].name": _ENV,
    "spec.runtime.env[].value": _ENV,
    "spec.runtime.env[].valueFrom.secretKeyRef.name": _ENV,
    "spec.runtime.env[].valueFrom.secretKeyRef.key": _ENV,
    "spec.runtime.env[].valueFrom.configMapKeyRef.name": _ENV,
    "spec.runtime.env[].valueFrom.configMapKeyRef.key": _ENV,
    "spec.runtime.resources.requests.cpu": _RESOURCES,
    "spec.runtime.resources.requests.memory": _RESOURCES,
    "spec.runtime.resources.limits.cpu": _RESOURCES,
    "spec.runtime.resources.limits.memory": _RESOURCES,
    "spec.runtime.shmSize": (
        "tests/unit/test_render_options.py::test_shm_size_limits_the_shared_memory_volume",
    ),
    "spec.runtime.contextLength": (
        "tests/unit/test_render_options.py::test_context_length_is_passed_to_sglang",
        _PROFILE_RULES,
    ),
    "spec.runtime.startupTimeoutSeconds": (
        "tests/unit/test_render_options.py::test_startup_timeout_is_the_startup_probe_budget",
    ),
    "spec.capabilities.reasoning": (_CAPABILITIES, _PROFILE_RULES),
    "spec.capabilities.toolCalling": (_CAPABILITIES,),
    "spec.gpu.product": (
        "tests/unit/test_render_options.py::test_gpu_product_picks_the_nodes_and_the_group_size",
        f"{_SHAPES}::test_compact_small4_is_the_cookbooks_gpu_count",
        f"{_SHAPES}::test_blackwell_adds_flashinfer_attention_for_small_4_and_hopper_does_not",
    ),
    "spec.gpu.gpusPerNode": (
        "tests/unit/test_render_options.py::test_gpus_per_node_sets_the_gpu_request_and_the_group_size",
        f"{_SHAPES}::test_never_two_ranks_of_one_multinode_group_on_one_node",
        _CEL_TWINS,
    ),
    "spec.parallelism.shape": (
        f"{_SHAPES}::test_the_quick_start_is_one_pod_with_two_h200_gpus",
        f"{_SHAPES}::test_four_compact_replicas_share_one_h200_node_and_the_fifth_goes_to_another",
        f"{_SHAPES}::test_node_shape_spreads_experts_and_attention_inside_one_node",
        f"{_SHAPES}::test_multinode_moe_flags_are_accepted_by_sglangs_parser",
        f"{_SHAPES}::test_dense_multinode_is_tensor_parallel_in_a_node_and_pipelined_across_nodes",
        f"{_SHAPES}::test_a_compact_replica_larger_than_gpus_per_node_is_refused_with_the_numbers",
        f"{_SHAPES}::test_status_topology_shows_the_shape_replicas_per_node_and_the_memory",
        _CEL_TWINS,
    ),
    "spec.parallelism.nodesPerReplica": (
        f"{_PARALLELISM}[nodesPerReplica]",
        f"{_SHAPES}::test_nodes_per_replica_above_one_needs_multinode",
        _CEL_TWINS,
    ),
    "spec.parallelism.tensorParallelSize": (
        f"{_PARALLELISM}[tensorParallelSize]",
        f"{_PARALLELISM}[pipelineParallelSize]",
        "tests/unit/test_api_models.py::test_parallelism_is_accepted_exactly_when_sglang_can_run_it",
        _CEL_TWINS,
    ),
    "spec.parallelism.pipelineParallelSize": (f"{_PARALLELISM}[pipelineParallelSize]",),
    "spec.parallelism.expertParallelSize": (f"{_PARALLELISM}[expertParallelSize]",),
    "spec.parallelism.attentionDataParallelSize": (
        f"{_PARALLELISM}[attentionDataParallelSize]",
        f"{_SHAPES}::test_attention_tensor_parallel_across_nodes_is_refused",
    ),
    "spec.parallelism.moeA2ABackend": (
        f"{_PARALLELISM}[moeA2ABackend]",
        f"{_SHAPES}::test_multinode_moe_flags_are_accepted_by_sglangs_parser",
    ),
    "spec.placement.nodeSelector": (
        "tests/unit/test_render_options.py::test_node_selector_limits_the_nodes_groups_use",
    ),
    "spec.placement.tolerations[].key": _TOLERATIONS,
    "spec.placement.tolerations[].operator": _TOLERATIONS,
    "spec.placement.tolerations[].value": _TOLERATIONS,
    "spec.placement.tolerations[].effect": _TOLERATIONS,
    "spec.placement.tolerations[].tolerationSeconds": _TOLERATIONS,
    "spec.placement.topologyKey": (
        "tests/unit/test_reconcile_core.py::test_two_groups_of_two_pods_each_inside_one_block",
        "tests/unit/test_placement.py::test_a_group_never_spans_two_blocks",
    ),
    "spec.placement.hostNetwork": (
        "tests/unit/test_render_options.py::test_host_network_uses_the_leader_nodes_internal_ip",
    ),
    "spec.placement.rdma.ipcLock": (
        *_RDMA,
        "tests/unit/test_render_options.py::test_rdma_without_ipc_lock_adds_no_capability",
    ),
    "spec.placement.rdma.socketInterface": _RDMA,
    "spec.placement.rdma.ibHca": _RDMA,
    "spec.placement.rdma.resources": _RDMA,
    "spec.placement.rdma.env": _RDMA,
    "spec.placement.priorityClassName": (
        "tests/unit/test_render_options.py::test_priority_class_is_set_on_every_pod",
    ),
    "spec.cache.mode": (
        _HUB,
        "tests/unit/test_render_options.py::test_node_local_cache_reads_under_the_host_path",
        *_SHARED_PVC,
    ),
    "spec.cache.hostPath": (
        "tests/unit/test_render_options.py::test_node_local_cache_reads_under_the_host_path",
        _IMMUTABLE,
    ),
    "spec.cache.prewarmSpareNodes": (
        "tests/unit/test_cache_plan.py::test_spare_nodes_are_kept_warm_preferring_those_already_ready",
    ),
    "spec.cache.fillTimeoutSeconds": (
        "tests/unit/test_cache_plan.py::test_the_fill_job_runs_the_fill_program_on_its_node_only",
        "tests/unit/test_cache_plan.py::test_a_job_past_its_deadline_reads_as_deadline_exceeded",
        _CLAIM_FILL_JOB,
    ),
    "spec.cache.pvc.claimName": _SHARED_PVC,
    "spec.cache.pvc.subPath": _SHARED_PVC,
    "spec.replicas": (
        "tests/unit/test_reconcile_core.py::test_two_groups_of_two_pods_each_inside_one_block",
        "tests/unit/test_reconcile_core.py::test_scale_down_drains_the_newest_group_then_removes_it",
        "tests/integration/test_api_crd.py::test_scale_subresource",
    ),
    "spec.autoscaling.enabled": (_AUTOSCALING_BOUNDS, _MIN_REPLICAS),
    "spec.autoscaling.minReplicas": (_MIN_REPLICAS,),
    "spec.autoscaling.maxReplicas": (
        _AUTOSCALING_BOUNDS,
        _SCALER + "test_scale_up_is_limited_by_its_step_the_maximum_and_what_can_be_placed",
    ),
    "spec.autoscaling.targetQueuePerReplica": (
        _SCALER + "test_a_queue_of_four_times_the_target_is_sized_in_one_step",
        _SCALING + "test_a_queue_at_four_times_the_target_creates_every_group_in_one_reconcile",
    ),
    "spec.autoscaling.tolerance": (_SCALER + "test_within_tolerance_nothing_changes",),
    "spec.autoscaling.intervalSeconds": (
        _SCALING + "test_a_queue_at_four_times_the_target_creates_every_group_in_one_reconcile",
        _SCALING + "test_stale_metrics_count_as_missing",
    ),
    "spec.autoscaling.scaleUp.stabilizationWindowSeconds": (
        _SCALER + "test_an_up_window_takes_the_lowest_recommendation",
    ),
    "spec.autoscaling.scaleUp.maxGroupsPerStep": (
        _SCALER + "test_scale_up_is_limited_by_its_step_the_maximum_and_what_can_be_placed",
    ),
    "spec.autoscaling.scaleDown.stabilizationWindowSeconds": (
        _SCALER + "test_a_scale_down_waits_for_its_window_and_takes_the_highest_recommendation",
        _SCALING + "test_a_lull_scales_down_after_its_window_draining_the_least_loaded_group",
    ),
    "spec.autoscaling.scaleDown.maxGroupsPerStep": (
        _SCALER + "test_scale_down_goes_by_at_most_its_step",
    ),
    "spec.rollout.maxSurge": (_SURGE, _MAX_UNAVAILABLE, _BUDGET),
    "spec.rollout.maxUnavailable": (
        _MAX_UNAVAILABLE,
        _BUDGET,
        "tests/unit/test_rollout_budget.py::test_rounding_as_documented_and_never_both_zero",
    ),
    "spec.rollout.progressDeadlineSeconds": (
        "tests/unit/test_policy_fields.py::test_progress_deadline_is_the_specs_number_of_seconds",
        _DEADLINE,
    ),
    "spec.rollout.autoRollback": (
        _ROLLOUT + "test_past_its_deadline_a_rollout_rolls_back_within_one_reconcile",
        _ROLLOUT + "test_without_auto_rollback_the_failed_revision_stays_and_says_what_to_do",
    ),
    "spec.rollout.drainTimeoutSeconds": (
        _ROLLOUT + "test_a_busy_leader_keeps_its_group_until_idle_or_the_drain_timeout",
        _ROLLOUT + "test_the_drain_timeout_is_the_pods_grace_period",
    ),
    "spec.rollout.surgeFallbackSeconds": (
        _ROLLOUT
        + "test_without_room_for_surge_groups_are_replaced_one_at_a_time_after_the_fallback",
    ),
    "spec.groupFailurePolicy.action": (
        "tests/unit/test_policy_fields.py::test_hold_keeps_a_failed_groups_pods_for_inspection",
        _RECREATE,
    ),
    "spec.groupFailurePolicy.initialBackoffSeconds": (
        "tests/unit/test_policy_fields.py::test_initial_backoff_is_the_wait_before_the_first_recreation",
        _RECREATE,
    ),
    "spec.groupFailurePolicy.maxBackoffSeconds": (
        "tests/unit/test_policy_fields.py::test_max_backoff_caps_the_doubling_wait",
    ),
}

PRINTER_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "Ready": (_COLUMNS_FILLED, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Desired": (_COLUMNS_FILLED, _AUTOSCALING_BOUNDS, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Queue": (
        _SCALING + "test_a_queue_at_four_times_the_target_creates_every_group_in_one_reconcile",
        _COLUMNS_DECLARED,
        _COLUMNS_SHOWN,
    ),
    "Nodes/Replica": (_COLUMNS_FILLED, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "GPU": (_COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "GPUs/Replica": (_COLUMNS_FILLED, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Status": (_COLUMNS_FILLED, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Age": (_COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Profile": (_COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Revision": (_COLUMNS_FILLED, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
    "Endpoint": (_COLUMNS_FILLED, _COLUMNS_DECLARED, _COLUMNS_SHOWN),
}

CONDITION_TYPES: Mapping[str, tuple[str, ...]] = {
    "Ready": ("tests/unit/test_status_report.py::test_ready_condition_follows_the_groups",),
    "Progressing": (
        "tests/unit/test_reconcile_core.py::test_two_groups_of_two_pods_each_inside_one_block",
        _SURGE,
        _DEADLINE,
    ),
    "Degraded": (
        "tests/unit/test_reconcile_core.py::test_invalid_shape_touches_nothing_and_names_the_field",
        "tests/unit/test_reconcile_core.py::test_a_restarting_group_is_forgotten_when_scaled_away",
        "tests/unit/test_policy_fields.py::test_hold_keeps_a_failed_groups_pods_for_inspection",
    ),
    "CacheReady": (
        "tests/unit/test_cache_plan.py::test_a_cold_cluster_fills_the_node_a_group_needs_and_places_nothing_yet",
        "tests/unit/test_cache_plan.py::test_a_corrupt_shard_fails_the_node_at_once_naming_the_file_and_places_nothing",
        "tests/unit/test_cache_plan.py::test_without_a_cache_nothing_is_filled_and_status_says_pods_download",
        "tests/unit/test_cache_plan.py::test_a_missing_claim_starts_no_fill_and_says_so",
        "tests/unit/test_cache_plan.py::"
        "test_a_corrupt_shard_fails_the_claim_naming_the_file_and_its_job_is_retried",
    ),
    "RolledBack": (
        _ROLLOUT + "test_past_its_deadline_a_rollout_rolls_back_within_one_reconcile",
        _ROLLOUT + "test_a_revision_whose_groups_fail_three_times_is_rolled_back",
        _ROLLOUT + "test_a_new_spec_after_a_rollback_rolls_out_again",
    ),
    "ScalingActive": (_SCALING + "test_unreadable_metrics_block_scale_down_and_say_which_group",),
    "ExternalScaler": (
        _SCALING + "test_spec_replicas_set_through_the_scale_subresource_is_reported_not_followed",
    ),
    "Schedulable": (
        "tests/unit/test_reconcile_core.py::test_unplaceable_third_group_is_reported_once_without_pod_writes",
        "tests/unit/test_render_options.py::test_node_selector_limits_the_nodes_groups_use",
    ),
}
