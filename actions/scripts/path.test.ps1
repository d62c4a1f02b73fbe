# op: path.test
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.path
    if (-not [IO.Path]::IsPathRooted($path)) {
        throw "not an absolute path: '$path'"
    }
    [ordered]@{
        ok     = $true
        exists = [bool](Test-Path -LiteralPath $path)
        is_dir = [bool](Test-Path -LiteralPath $path -PathType Container)
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
