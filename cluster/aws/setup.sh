#!/usr/bin/env bash
# Once per AWS account and region, before the first `ray up cluster/gpu.yaml` (needs the AWS CLI and an admin's
# credentials on your machine; the nodes never see them):
#
#   bash cluster/aws/setup.sh 203.0.113.7/32 YOUR-BUCKET [REGION]     # REGION defaults to us-west-2
#
#  - security group artsweep-cluster in the default VPC: SSH (22) from that CIDR only, all traffic between its
#    members. Made here because a group Ray 2.60 creates itself gets SSH from 0.0.0.0/0; a group that already
#    has rules is used as it is.
#  - roles + instance profiles artsweep-head and artsweep-worker with cluster/aws/head-policy.json and
#    worker-policy.json (YOUR-ACCOUNT-ID, YOUR-BUCKET and the region filled in).
# Then put the same CIDR, account id and bucket into cluster/gpu.yaml (the REPLACE / YOUR-... placeholders).
# Rerunning it updates the policies; the group's rules are only set when it is created.
set -euo pipefail
cidr=${1:?usage: setup.sh CIDR BUCKET [REGION]}
bucket=${2:?usage: setup.sh CIDR BUCKET [REGION]}
region=${3:-us-west-2}
here=$(cd "$(dirname "$0")" && pwd)
export AWS_DEFAULT_REGION=$region
account=$(aws sts get-caller-identity --query Account --output text)

policy() { # a policy file with this account, bucket and region
    sed -e "s/YOUR-ACCOUNT-ID/$account/g" -e "s/YOUR-BUCKET/$bucket/g" -e "s/us-west-2/$region/g" "$here/$1"
}

for who in head worker; do
    name=artsweep-$who
    if ! aws iam get-role --role-name "$name" >/dev/null 2>&1; then
        aws iam create-role --role-name "$name" --assume-role-policy-document "file://$here/trust-policy.json" >/dev/null
    fi
    aws iam put-role-policy --role-name "$name" --policy-name "$name" --policy-document "$(policy "$who-policy.json")"
    if ! aws iam get-instance-profile --instance-profile-name "$name" >/dev/null 2>&1; then
        aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
        aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
    fi
    echo "setup.sh: instance profile arn:aws:iam::$account:instance-profile/$name"
done

vpc=$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)
group=$(aws ec2 describe-security-groups --filters Name=vpc-id,Values="$vpc" Name=group-name,Values=artsweep-cluster \
    --query 'SecurityGroups[0].GroupId' --output text)
if [ "$group" = None ]; then
    group=$(aws ec2 create-security-group --group-name artsweep-cluster --vpc-id "$vpc" \
        --description "artsweep: SSH from one CIDR, all traffic between members" --query GroupId --output text)
    aws ec2 authorize-security-group-ingress --group-id "$group" --ip-permissions \
        "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$group}]" \
        "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$cidr,Description=ray-up}]" >/dev/null
fi
echo "setup.sh: security group $group (artsweep-cluster) in $vpc"
