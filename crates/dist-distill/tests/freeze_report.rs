//! GDD-I's frozen fraction on the reference's CIFAR-10 NCSN++ (names from edm-core's SongUNet,
//! random init): the paper/reference report 84.4 % at freeze=1 and 86.5 % at freeze=2. The exact
//! counts were computed with Zyriix/GDD's own `training/networks.py` and `training_loop.py` rule.

use burn::backend::Flex;
use dist_distill::analyze::ncsnpp_cifar10_config;
use dist_distill::freeze::FreezeReport;
use edm_core::EdmPrecond;

#[test]
fn ncsnpp_cifar10_frozen_fractions_match_reference() {
    let net = EdmPrecond::<Flex>::init(&ncsnpp_cifar10_config(), 0, &Default::default()).unwrap();
    let params = net.named_parameters();
    let report =
        |level| FreezeReport::new(params.iter().map(|t| (t.name.as_str(), t.numel())), level);
    let r0 = report(0);
    assert_eq!(r0.total_params, 56_395_523);
    assert_eq!(r0.frozen_params, 0);
    let r1 = report(1);
    assert_eq!(r1.frozen_params, 47_597_568);
    assert_eq!(format!("{:.1}", r1.frozen_percent), "84.4");
    let r2 = report(2);
    assert_eq!(r2.frozen_params, 48_781_824);
    assert_eq!(format!("{:.1}", r2.frozen_percent), "86.5");
    let r3 = report(3);
    assert_eq!(r3.frozen_params, 51_015_168);
    assert_eq!(r3.trainable_params + r3.frozen_params, r3.total_params);
}
