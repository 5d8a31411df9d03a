"""test-shadow-vars.sh's case: the shadow variable API's lines, from init."""

from selftest import Selftest

MOD = "test_klp_shadow_vars"


def test_basic_shadow_variable_api(klp: Selftest) -> None:
    """A plain module's init logs every call, pointers as its own PTR ids."""
    klp.start_test("basic shadow variable API")
    klp.load_mod(MOD)
    klp.unload_mod(MOD)
    klp.check_result(f"""
        % insmod test_modules/{MOD}.ko
        {MOD}: klp_shadow_get(obj=PTR1, id=0x1234) = PTR0
        {MOD}:   got expected NULL result
        {MOD}: shadow_ctor: PTR3 -> PTR2
        {MOD}: klp_shadow_get_or_alloc(obj=PTR1, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR2 = PTR3
        {MOD}: shadow_ctor: PTR6 -> PTR5
        {MOD}: klp_shadow_alloc(obj=PTR1, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR5 = PTR6
        {MOD}: shadow_ctor: PTR8 -> PTR7
        {MOD}: klp_shadow_alloc(obj=PTR9, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR7 = PTR8
        {MOD}: shadow_ctor: PTR11 -> PTR10
        {MOD}: klp_shadow_alloc(obj=PTR9, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR10 = PTR11
        {MOD}: shadow_ctor: PTR13 -> PTR12
        {MOD}: klp_shadow_get_or_alloc(obj=PTR14, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR12 = PTR13
        {MOD}: shadow_ctor: PTR16 -> PTR15
        {MOD}: klp_shadow_alloc(obj=PTR14, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR15 = PTR16
        {MOD}: klp_shadow_get(obj=PTR1, id=0x1234) = PTR3
        {MOD}:   got expected PTR3 -> PTR2 result
        {MOD}: klp_shadow_get(obj=PTR1, id=0x1235) = PTR6
        {MOD}:   got expected PTR6 -> PTR5 result
        {MOD}: klp_shadow_get(obj=PTR9, id=0x1234) = PTR8
        {MOD}:   got expected PTR8 -> PTR7 result
        {MOD}: klp_shadow_get(obj=PTR9, id=0x1235) = PTR11
        {MOD}:   got expected PTR11 -> PTR10 result
        {MOD}: klp_shadow_get(obj=PTR14, id=0x1234) = PTR13
        {MOD}:   got expected PTR13 -> PTR12 result
        {MOD}: klp_shadow_get(obj=PTR14, id=0x1235) = PTR16
        {MOD}:   got expected PTR16 -> PTR15 result
        {MOD}: klp_shadow_get_or_alloc(obj=PTR1, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR2 = PTR3
        {MOD}:   got expected PTR3 -> PTR2 result
        {MOD}: klp_shadow_get_or_alloc(obj=PTR9, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR7 = PTR8
        {MOD}:   got expected PTR8 -> PTR7 result
        {MOD}: klp_shadow_get_or_alloc(obj=PTR14, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR12 = PTR13
        {MOD}:   got expected PTR13 -> PTR12 result
        {MOD}: shadow_dtor(obj=PTR1, shadow_data=PTR3)
        {MOD}: klp_shadow_free(obj=PTR1, id=0x1234, dtor=PTR17)
        {MOD}: klp_shadow_get(obj=PTR1, id=0x1234) = PTR0
        {MOD}:   got expected NULL result
        {MOD}: shadow_dtor(obj=PTR9, shadow_data=PTR8)
        {MOD}: klp_shadow_free(obj=PTR9, id=0x1234, dtor=PTR17)
        {MOD}: klp_shadow_get(obj=PTR9, id=0x1234) = PTR0
        {MOD}:   got expected NULL result
        {MOD}: shadow_dtor(obj=PTR14, shadow_data=PTR13)
        {MOD}: klp_shadow_free(obj=PTR14, id=0x1234, dtor=PTR17)
        {MOD}: klp_shadow_get(obj=PTR14, id=0x1234) = PTR0
        {MOD}:   got expected NULL result
        {MOD}: klp_shadow_get(obj=PTR1, id=0x1235) = PTR6
        {MOD}:   got expected PTR6 -> PTR5 result
        {MOD}: klp_shadow_get(obj=PTR9, id=0x1235) = PTR11
        {MOD}:   got expected PTR11 -> PTR10 result
        {MOD}: klp_shadow_get(obj=PTR14, id=0x1235) = PTR16
        {MOD}:   got expected PTR16 -> PTR15 result
        {MOD}: klp_shadow_free_all(id=0x1235, dtor=PTR0)
        {MOD}: klp_shadow_get(obj=PTR1, id=0x1235) = PTR0
        {MOD}:   got expected NULL result
        {MOD}: klp_shadow_get(obj=PTR9, id=0x1235) = PTR0
        {MOD}:   got expected NULL result
        {MOD}: klp_shadow_get(obj=PTR14, id=0x1235) = PTR0
        {MOD}:   got expected NULL result
        % rmmod {MOD}""")
